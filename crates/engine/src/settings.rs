//! Engine settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

pub use salesync_core::clock::{Clock, SystemClock};

use crate::csv_stream::{CsvExportParser, ExportParser};

/// How the initial full sync reads Marketo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialMode {
    /// The path that costs fewer Marketo calls: the engine probes the instance (the oldest
    /// lead, which sets the number of 31-day bulk windows, and the highest lead id, which sets
    /// the number of 300-id REST chunks) and takes bulk (about four calls per window) or REST
    /// (one call per chunk), whichever is cheaper, saying which and why in
    /// [`SyncReport::initial_path_reason`](crate::SyncReport::initial_path_reason). Bulk falls
    /// back to REST when the subscription refuses bulk exports (`Rejected`/`AccessDenied` from
    /// the first `start_lead_export`).
    #[default]
    Auto,
    /// Bulk extract only.
    Bulk,
    /// REST id-range sweep only.
    Rest,
}

/// What to do when the bulk export quota is used up during the initial sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BulkQuotaPolicy {
    /// Continue the initial sync through the REST id-range sweep (the default).
    #[default]
    FallBackToRest,
    /// Wait until the quota resets (or `retry_after` when the reset time is unknown), then
    /// continue the bulk export.
    Wait {
        /// Wait this long when Marketo does not say when the quota resets.
        retry_after: Duration,
    },
}

/// Which incremental streams run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Lead changes (New Lead, Change Data Value).
    pub lead_changes: bool,
    /// Deleted leads (Delete Lead).
    pub deleted_leads: bool,
    /// Merges (Merge Leads).
    pub merges: bool,
    /// Salesforce changes that bear on people's opportunity (contact roles, opportunities,
    /// lead conversions); only with [`EngineSettings::opportunity_lookup`].
    pub salesforce_opportunities: bool,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self { lead_changes: true, deleted_leads: true, merges: true, salesforce_opportunities: true }
    }
}

/// Engine-level retries of transient port errors (rate limits, outages), on top of the
/// connectors' own retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    /// Attempts per call, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles after each attempt.
    pub base_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self { max_attempts: 4, base_delay: Duration::from_secs(2), max_delay: Duration::from_secs(120) }
    }
}

/// Settings of a [`SyncEngine`](crate::SyncEngine).
///
/// Build with struct-update syntax from [`EngineSettings::default`]; `instance_id` is required.
#[derive(Clone)]
pub struct EngineSettings {
    /// The Marketo instance (Munchkin id); the store is bound to it and refuses another.
    pub instance_id: String,
    /// Time between incremental passes in [`SyncEngine::run`](crate::SyncEngine::run) (default 60 s).
    pub poll_interval: Duration,
    /// Records per page and ids per Marketo call (1..=300, default 300).
    pub page_size: u32,
    /// How the initial sync reads Marketo (default [`InitialMode::Auto`]).
    pub initial_mode: InitialMode,
    /// Which incremental streams run (all by default).
    pub streams: StreamSettings,
    /// Fill unresolved opportunity ids from Salesforce, off the Marketo pull's path (see the
    /// `opportunity` module notes; default on).
    pub opportunity_lookup: bool,
    /// Start of the bulk path's `createdAt` windows (default 2006-01-01, before Marketo existed).
    /// With `probe_oldest`, the windows start at the oldest lead instead when it is later.
    pub oldest_created_at: DateTime<Utc>,
    /// Bulk path: before planning windows, find the oldest lead (Marketo ids grow with creation:
    /// walk `leads_by_filter(filterType=id)` chunks from id 1 to the first lead) and start the
    /// windows at the earliest `createdAt` of that chunk (truncated to the day) minus
    /// `probe_slack`, never before `oldest_created_at`. Falls back to `oldest_created_at` when no
    /// lead is found within 100 chunks or the probe fails (default on).
    pub probe_oldest: bool,
    /// How far before the probed oldest `createdAt` the windows start (default 31 days, one extra
    /// window): covers people whose ids are higher than their creation order suggests (e.g.
    /// imported with an earlier `createdAt`).
    pub probe_slack: Duration,
    /// Bulk path: export jobs kept in flight (created, queued or processing, not yet applied),
    /// the current window's included: later windows are created and enqueued ahead so Marketo
    /// processes them (two at a time) while earlier files are applied in order (1..=10, default 10;
    /// Marketo queues at most 10 jobs).
    pub bulk_jobs_ahead: u32,
    /// What to do when the bulk export quota is used up.
    pub bulk_quota: BulkQuotaPolicy,
    /// First delay between bulk export status polls; doubles up to `export_poll_max`.
    pub export_poll: Duration,
    /// Longest delay between bulk export status polls.
    pub export_poll_max: Duration,
    /// REST sweep: the sweep covers at least the ids up to this one (e.g. the highest Marketo id
    /// the host knows of). `None`: stop only after `rest_empty_chunks_to_stop` empty chunks.
    pub rest_max_marketo_id: Option<i64>,
    /// REST sweep: before sweeping, read New Lead activities of this recent window and sweep at
    /// least up to the highest lead id they name (default 7 days; `None`: no probe).
    pub rest_probe_window: Option<Duration>,
    /// REST sweep: id chunks read at once (1..=10, default 4). The chunks are applied in id
    /// order as they arrive; the Marketo client's limiter still bounds the calls per window and
    /// in flight, so this only needs to cover the API's latency at the call rate allowed.
    pub rest_reads_in_flight: u32,
    /// REST sweep: stop after this many consecutive id chunks without any lead (default 50, i.e.
    /// 15 000 unused ids at page size 300).
    pub rest_empty_chunks_to_stop: u32,
    /// Drift repair: a reconciling resync (the REST id sweep, which also removes people Marketo
    /// no longer has, plus one org-wide read of the opportunity links compared with every
    /// person) runs when the last full read of Marketo (initial sync or reconcile) started this
    /// long ago (default weekly; `None`: only when a stream's position is too old). Its findings
    /// are in [`SyncReport::drift`](crate::SyncReport::drift).
    pub reconcile_every: Option<Duration>,
    /// Drift repair's quota guard: a due reconcile starts only when the Marketo instance's
    /// calls today (every integration's, by Marketo's `stats/usage`) plus the reconcile's
    /// estimated calls stay within this share of [`marketo_daily_quota`](Self::marketo_daily_quota)
    /// (default 0.5); otherwise it waits, checked again each pass, with a warning. 1.0 turns the
    /// guard off.
    pub reconcile_max_daily_usage: f64,
    /// The Marketo subscription's daily API quota (default 50,000; Marketo does not report it).
    pub marketo_daily_quota: u64,
    /// Rebuild: the longest a pass spends on the shadow copy's initial pull after its live
    /// streams (default two minutes), so the live mirror stays current while a rebuild runs over
    /// many passes. Each slice writes at least one page (or waits once for an export); once the
    /// pull is done, the opportunity fill (joined from the org's links) and the shadow's streams
    /// finish in that slice.
    pub rebuild_slice: Duration,
    /// Deleted-lead activities older than this may be pruned by Marketo (14 days): when the
    /// deleted-leads stream has not been read for longer, a reconciling resync runs.
    pub deleted_leads_retention: Duration,
    /// Engine-level retries of transient port errors the connector has not retried already
    /// (errors whose [`retries_spent`](salesync_core::Error::retries_spent) is true fail the
    /// pass, and the next pass tries again).
    pub retry: RetrySettings,
    /// Capacity of the event and change broadcast channels (default 1024).
    pub channel_capacity: usize,
    /// The clock (default [`SystemClock`]).
    pub clock: Arc<dyn Clock>,
    /// Reads bulk export files (default [`CsvExportParser`]).
    pub export_parser: Arc<dyn ExportParser>,
    /// This process's name as a worker: who holds the leader lease for the Marketo pull (the
    /// store's [`MARKETO_PULL_LEASE`](crate::MARKETO_PULL_LEASE) lease); the CLI gives
    /// delivery's `DeliverySettings::worker_id` the same name. Unique per process: the default
    /// is random (`<pid>-<random hex>`). A host that restarts under a stable identity (a pod name)
    /// may set it so a restarted process takes its own unexpired lease back at once.
    pub worker_id: String,
    /// How long the leader lease lasts without renewal (default 60 s). The leader renews it once
    /// `leader_lease_ttl / 3` has passed (checked between pages, before port calls and while
    /// waiting); a crashed leader is replaced by another process within this time plus its
    /// `leader_poll`.
    pub leader_lease_ttl: Duration,
    /// How often a process that is not the leader tries to take the lease in
    /// [`SyncEngine::run`](crate::SyncEngine::run) (default 5 s).
    pub leader_poll: Duration,
}

/// A random worker id for this process: `<pid>-<16 hex digits>`.
pub fn random_worker_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's randomness once per process, then incremented.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    format!("{}-{:016x}", std::process::id(), h.finish())
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            instance_id: String::new(),
            poll_interval: Duration::from_secs(60),
            page_size: 300,
            initial_mode: InitialMode::Auto,
            streams: StreamSettings::default(),
            opportunity_lookup: true,
            oldest_created_at: Utc.with_ymd_and_hms(2006, 1, 1, 0, 0, 0).single().unwrap_or(DateTime::UNIX_EPOCH),
            probe_oldest: true,
            probe_slack: Duration::from_secs(31 * 24 * 3600),
            bulk_jobs_ahead: 10,
            bulk_quota: BulkQuotaPolicy::default(),
            export_poll: Duration::from_secs(30),
            export_poll_max: Duration::from_secs(300),
            rest_max_marketo_id: None,
            rest_probe_window: Some(Duration::from_secs(7 * 24 * 3600)),
            rest_empty_chunks_to_stop: 50,
            rest_reads_in_flight: 4,
            reconcile_every: Some(Duration::from_secs(7 * 24 * 3600)),
            rebuild_slice: Duration::from_secs(120),
            reconcile_max_daily_usage: 0.5,
            marketo_daily_quota: 50_000,
            deleted_leads_retention: Duration::from_secs(14 * 24 * 3600),
            retry: RetrySettings::default(),
            channel_capacity: 1024,
            clock: Arc::new(SystemClock),
            export_parser: Arc::new(CsvExportParser),
            worker_id: random_worker_id(),
            leader_lease_ttl: Duration::from_secs(60),
            leader_poll: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for EngineSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineSettings")
            .field("instance_id", &self.instance_id)
            .field("poll_interval", &self.poll_interval)
            .field("page_size", &self.page_size)
            .field("initial_mode", &self.initial_mode)
            .field("streams", &self.streams)
            .field("opportunity_lookup", &self.opportunity_lookup)
            .field("oldest_created_at", &self.oldest_created_at)
            .field("probe_oldest", &self.probe_oldest)
            .field("bulk_jobs_ahead", &self.bulk_jobs_ahead)
            .field("bulk_quota", &self.bulk_quota)
            .field("rest_max_marketo_id", &self.rest_max_marketo_id)
            .field("rest_empty_chunks_to_stop", &self.rest_empty_chunks_to_stop)
            .field("reconcile_every", &self.reconcile_every)
            .field("rebuild_slice", &self.rebuild_slice)
            .field("reconcile_max_daily_usage", &self.reconcile_max_daily_usage)
            .field("marketo_daily_quota", &self.marketo_daily_quota)
            .field("rest_reads_in_flight", &self.rest_reads_in_flight)
            .field("worker_id", &self.worker_id)
            .field("leader_lease_ttl", &self.leader_lease_ttl)
            .field("leader_poll", &self.leader_poll)
            .finish_non_exhaustive()
    }
}

impl EngineSettings {
    pub(crate) fn validate(&self) -> crate::Result<()> {
        let bad = |field: &'static str, reason: &str| Err(crate::Error::Config { field, reason: reason.to_string() });
        if self.instance_id.trim().is_empty() {
            return bad("instance_id", "must name the Marketo instance");
        }
        if self.page_size == 0 || self.page_size > 300 {
            return bad("page_size", "must be between 1 and 300");
        }
        if self.poll_interval.is_zero() {
            return bad("poll_interval", "must be positive");
        }
        if self.bulk_jobs_ahead == 0 || self.bulk_jobs_ahead > 10 {
            return bad("bulk_jobs_ahead", "must be between 1 and 10");
        }
        if self.rest_empty_chunks_to_stop == 0 {
            return bad("rest_empty_chunks_to_stop", "must be at least 1");
        }
        if self.rest_reads_in_flight == 0 || self.rest_reads_in_flight > 10 {
            return bad("rest_reads_in_flight", "must be between 1 and 10");
        }
        if self.reconcile_every.is_some_and(|d| d.is_zero()) {
            return bad("reconcile_every", "must be positive (None turns it off)");
        }
        if !(self.reconcile_max_daily_usage > 0.0 && self.reconcile_max_daily_usage <= 1.0) {
            return bad("reconcile_max_daily_usage", "must be in (0, 1]");
        }
        if self.marketo_daily_quota == 0 {
            return bad("marketo_daily_quota", "must be at least 1");
        }
        if self.rebuild_slice.is_zero() {
            return bad("rebuild_slice", "must be positive");
        }
        if self.channel_capacity == 0 {
            return bad("channel_capacity", "must be at least 1");
        }
        if self.retry.max_attempts == 0 {
            return bad("retry.max_attempts", "must be at least 1");
        }
        if self.worker_id.trim().is_empty() {
            return bad("worker_id", "must name this process");
        }
        if self.leader_lease_ttl < Duration::from_millis(30) {
            return bad("leader_lease_ttl", "must be at least 30 ms");
        }
        if self.leader_poll.is_zero() {
            return bad("leader_poll", "must be positive");
        }
        Ok(())
    }
}
