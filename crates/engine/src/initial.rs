//! The initial full sync: a bulk extract by `createdAt` windows, or a REST id-range sweep.
//!
//! # How the REST path enumerates people
//!
//! Marketo has no "list all leads" call. The REST path sweeps the Marketo id space with
//! `leads_by_filter(filterType=id)`, `page_size` (≤300) consecutive ids per call, from id 1
//! upwards. Where to stop is discovered, not guessed: before sweeping, the engine reads the New
//! Lead (12) activities of the last `rest_probe_window` (7 days) and takes the highest lead id
//! they name as a lower bound, together with `rest_max_marketo_id` when the host sets one. The
//! sweep stops once it is past that bound *and* has seen `rest_empty_chunks_to_stop`
//! consecutive chunks without any lead, and no mirror person has a higher id. This sees everyone, qualified or not, whoever owns them (users, queues or inactive
//! users), at the cost of `highest id / 300` calls. The alternative, filtering by
//! `sfdcLeadOwnerId` with the ids of active Salesforce users, misses people owned by queues and
//! inactive users, so it is not used. People created while the sweep runs are picked up by the
//! incremental pass, which starts from the sweep's start time; a gap of unused ids longer than the
//! stop distance could hide later ids, which is what `rest_max_marketo_id` is for.
//!
//! Because a chunk covers a closed id range, the sweep also knows which mirror people in that
//! range Marketo no longer has: they are removed as `Vanished` in the same page. That makes the
//! sweep exact and resumable, and it is what a reconciling resync runs.
//!
//! # Bulk path
//!
//! `createdAt` windows of 31 days (minus a second, both ends inclusive) from an origin to the
//! sync's start. The origin is fixed once per initial sync and checkpointed: with
//! `probe_oldest` (the default) the engine first finds the oldest lead — Marketo ids grow with
//! creation, so it reads `leads_by_filter(filterType=id)` chunks of `page_size` ids from id 1
//! (at most 100 chunks) up to the first chunk holding any lead, and takes the earliest
//! `createdAt` there, truncated to the day, minus `probe_slack` — and never starts before
//! `oldest_created_at` (the origin when probing is off, finds nothing, or fails). This turns an
//! instance created in 2024 from ~250 windows since 2006 into a few dozen.
//!
//! Windows are pipelined: up to `bulk_jobs_ahead` (≤ 10, Marketo's queue size) jobs are in
//! flight, the current window's and the next windows' (`ahead`), created and enqueued while
//! earlier files are applied; Marketo processes two at a time. Every created job id is
//! checkpointed at once, so a restarted run reuses the jobs it has instead of creating more.
//! Only the current window's job is polled (the later ones are not needed before their turn;
//! a job that is already complete costs one status call and no wait). Files are applied strictly
//! in window order, so the position stays "windows before `window` applied; `window` from job
//! `export_id` at byte `offset`", plus the ids of the jobs ahead; finishing a window hands
//! `ahead[0]` over as the next window's job in the same checkpoint.
//!
//! Per window: stream the CSV and apply it in pages of `page_size` rows, each page with a
//! checkpoint holding the window, job id, rows applied and the byte offset after the last applied
//! row (a resumed download starts there). A queue-full answer (1029, a rate limit from the
//! connector) stops creating jobs ahead until the next window, and is waited out for the current
//! window; an exhausted export quota stops creating jobs ahead for the pass, and for the current
//! window is handled per `BulkQuotaPolicy` (falling back to REST cancels the jobs ahead). A
//! failed, cancelled or expired job is replaced (up to three times per window).

use chrono::{DateTime, Utc};
use futures::stream::FuturesOrdered;
use salesync_core::mapping::{LeadField, LeadRecord};
use salesync_core::mirror::{Decision, Incoming, RemovalReason};
use salesync_core::ports::marketo::{ExportFilter, ExportState};
use salesync_core::ports::store::StreamId;
use salesync_core::{error::RecordError, mapping::MarketoLead};
use std::collections::{HashSet, VecDeque};

use crate::checkpoint::{self, BulkPos, InitialState, InitialStatus};
use crate::csv_stream::{RowError, lead_from_row};
use crate::engine::Pass;
use crate::events::Phase;
use crate::incremental::Incremental;
use crate::opportunity::OpportunityFill;
use crate::report::{BulkQuotaAction, InitialPath};
use crate::settings::{BulkQuotaPolicy, InitialMode};
use crate::{Error, Result};
use futures::StreamExt;

/// Activity type of New Lead.
const NEW_LEAD: i64 = 12;
/// Marketo answers at most 10 calls of an instance at once.
const MAX_REST_READS_IN_FLIGHT: u32 = 10;
/// Pages of New Lead activities the REST sweep's probe reads at most.
const MAX_PROBE_PAGES: usize = 100;

/// Failed or cancelled export jobs tolerated per window.
const MAX_EXPORT_FAILURES: u32 = 3;

/// Days per `createdAt` window (Marketo allows at most 31).
const WINDOW_DAYS: i64 = 31;
/// Chunks of ids the oldest-lead probe reads at most before falling back to `oldest_created_at`.
const MAX_OLDEST_PROBE_CHUNKS: i64 = 100;
/// Marketo queues at most 10 export jobs (processing ones included); the 11th gets 1029.
const MAX_QUEUED_JOBS: u32 = 10;

/// What creating an export job gave.
enum Created {
    /// The job, created and enqueued.
    Job(String),
    /// The queue is full (a window ahead): try again after the current window.
    Busy,
    /// The export quota is used up (a window ahead): create no more jobs ahead in this pass.
    NoQuota,
    /// Continue via REST.
    UseRest,
}

/// How the bulk path ended.
enum BulkOutcome {
    Done,
    UseRest,
}

/// How waiting for an export ended.
enum ExportWait {
    Ready,
    Failed(String),
}

/// The initial sync (and the reconciling resync) of one pass.
pub(crate) struct InitialSync<'p, 'a> {
    pass: &'p mut Pass<'a>,
}

impl<'p, 'a> InitialSync<'p, 'a> {
    pub(crate) fn new(pass: &'p mut Pass<'a>) -> Self {
        Self { pass }
    }
}

impl<'a> InitialSync<'_, 'a> {
    /// Runs or resumes (`resumed`) the initial sync described by `state`, fills the
    /// opportunities it deferred, then positions the incremental streams at its start time and
    /// marks it done.
    pub(crate) async fn run_initial(&mut self, mut state: InitialState, resumed: bool) -> Result<InitialState> {
        if state.reconcile {
            self.pass.report.reconciled = true;
            self.pass.counting_drift = true;
        }
        if self.pass.eng.settings.opportunity_lookup {
            // The org-wide opportunity read runs beside the pull, on this task (at once for a
            // reconcile, which compares every person with it).
            let (mut deferral, preload) = crate::opportunity::Deferral::new();
            if state.reconcile {
                deferral.start_now();
            }
            self.pass.deferral = Some(deferral);
            let mut side = self.pass.helper();
            let (pulled, preloaded) = {
                let pull = async {
                    let r = self.pull_initial(&mut state).await;
                    if let Some(d) = self.pass.deferral.as_mut() {
                        d.pull_done();
                    }
                    r
                };
                tokio::join!(pull, preload.run(&mut side))
            };
            self.pass.absorb(side.report);
            let deferral = self.pass.deferral.take();
            pulled?;
            // A rebuild slice bounds the pull only: the fill that follows joins the org's links
            // read beside it, which a later slice would not have (it would look everyone up).
            self.pass.deadline = None;
            let links = match preloaded {
                Some(Ok(())) => deferral.as_ref().and_then(|d| d.links()),
                Some(Err(Error::Cancelled)) => return Err(Error::Cancelled),
                Some(Err(e)) => {
                    self.pass
                        .report
                        .warnings
                        .push(format!("reading the org's opportunity links failed, looking up: {e}"));
                    None
                }
                None => None,
            };
            self.pass.set_phase(Phase::Opportunities);
            if let Some(d) = deferral {
                OpportunityFill::new(self.pass).fill_deferred(d.into_waiting(), links.clone()).await?;
            }
            if resumed {
                // People an interrupted run wrote unresolved are not in this run's list.
                OpportunityFill::new(self.pass).fill_unresolved(links.as_deref()).await?;
            }
            if state.reconcile
                && let Some(links) = &links
            {
                let mark = state.started_at - chrono::Duration::minutes(crate::incremental::CLOCK_SKEW_MARGIN_MINUTES);
                OpportunityFill::new(self.pass).verify_all(links, mark).await?;
            }
        } else {
            self.pull_initial(&mut state).await?;
        }
        if let Some(a) = state.bulk_quota_action {
            self.pass.report.bulk_quota_action = Some(a);
        }
        Incremental::new(self.pass).position_streams(state.started_at).await?;
        state.status = InitialStatus::Done;
        self.pass.put(StreamId::InitialSync, &state).await?;
        self.pass.counting_drift = false;
        Ok(state)
    }

    /// The initial pull itself: bulk (falling back to REST) or REST.
    async fn pull_initial(&mut self, state: &mut InitialState) -> Result<()> {
        if state.path == InitialPath::Bulk && !state.reconcile {
            self.pass.report.initial_path = Some(InitialPath::Bulk);
            self.pass.set_phase(Phase::Initial(InitialPath::Bulk));
            if let BulkOutcome::UseRest = self.initial_bulk(state).await? {
                state.path = InitialPath::Rest;
                self.pass.put(StreamId::InitialSync, &*state).await?;
            }
        }
        if state.path == InitialPath::Rest {
            self.pass.report.initial_path = Some(InitialPath::Rest);
            self.pass.set_phase(if state.reconcile { Phase::Reconcile } else { Phase::Initial(InitialPath::Rest) });
            self.initial_rest(state).await?;
        }
        Ok(())
    }

    async fn initial_rest(&mut self, st: &mut InitialState) -> Result<()> {
        let fields = self.pass.fields().await?;
        let chunk = i64::from(self.pass.eng.settings.page_size);
        if st.rest.probed_max.is_none() && !st.rest.complete {
            let probed = match self.probe_max_id(st.started_at).await {
                Ok(max) => max,
                Err(Error::Cancelled) => return Err(Error::Cancelled),
                Err(e) => {
                    self.pass.report.warnings.push(format!("new-lead probe failed, sweeping by gap only: {e}"));
                    0
                }
            };
            st.rest.probed_max = Some(probed);
        }
        let hint = st.rest.probed_max.unwrap_or(0).max(self.pass.eng.settings.rest_max_marketo_id.unwrap_or(0));
        let depth = self.pass.eng.settings.rest_reads_in_flight.clamp(1, MAX_REST_READS_IN_FLIGHT) as usize;
        let stop = self.pass.eng.settings.rest_empty_chunks_to_stop;
        let (eng, cancel, mirror) = (self.pass.eng, self.pass.cancel, self.pass.mirror.clone());
        // Each chunk is read on a pass of its own so several are in flight while this loop
        // applies them, strictly in id order, each with its checkpoint.
        let read = |start: i64| {
            let fields = fields.clone();
            let mirror = mirror.clone();
            async move {
                // Dropped midway when the sweep stops early: it checks the lease but never
                // renews it (a store write cut off could hold the store's connection); this
                // loop renews it while it waits.
                let mut own = Pass::on(eng, cancel, mirror);
                own.renews_lease = false;
                let records = InitialSync::new(&mut own).id_chunk("leads by id range", start, chunk, &fields).await;
                (records, own.report)
            }
        };
        let mut reads = FuturesOrdered::new();
        let mut starts: VecDeque<i64> = VecDeque::new();
        let mut planned = st.rest.next_id;
        while !st.rest.complete {
            self.pass.check_cancel()?;
            // Past the hint, only as many chunks as could still be needed to stop are read ahead.
            while starts.len() < depth {
                let beyond = starts.iter().filter(|s| **s > hint).count() as u32;
                if planned > hint && beyond >= stop.saturating_sub(st.rest.empty_run).max(1) {
                    break;
                }
                reads.push_back(read(planned));
                starts.push_back(planned);
                planned = planned.saturating_add(chunk);
            }
            let next = loop {
                tokio::select! {
                    next = reads.next() => break next,
                    _ = tokio::time::sleep(eng.renew_every()) => eng.keep_lead(false).await?,
                }
            };
            let Some((records, own)) = next else { break };
            let start = starts.pop_front().unwrap_or(st.rest.next_id);
            self.pass.absorb(own);
            let records = records?;
            let end = start.saturating_add(chunk - 1);
            let seen: HashSet<i64> = records.iter().filter_map(record_id).collect();
            let anonymous_error = records.iter().any(|r| record_id(r).is_none());
            let mut in_range: Vec<_> = self
                .pass
                .list_people(Some(start - 1), self.pass.eng.settings.page_size)
                .await?
                .into_iter()
                .filter(|p| p.marketo_id <= end)
                .collect();
            let outside: Vec<i64> = seen.iter().copied().filter(|id| *id < start || *id > end).collect();
            if !outside.is_empty() {
                in_range.extend(self.pass.people_by_ids(&outside).await?);
            }
            let vanished: Vec<i64> = if anonymous_error {
                Vec::new()
            } else {
                in_range.iter().map(|p| p.marketo_id).filter(|id| !seen.contains(id)).collect()
            };
            let mut page = crate::engine::PageBuilder::new(in_range, self.pass.now());
            let now = self.pass.now();
            for r in records {
                match r.0 {
                    Ok(lead) => page.push(Incoming::Lead(lead.qualify(now))),
                    Err(e) => page.error(e),
                }
            }
            for id in vanished {
                page.push_decision(Decision::Remove { marketo_id: id, reason: RemovalReason::Vanished });
            }
            match seen.iter().max() {
                Some(&max) => {
                    st.rest.highest_seen = st.rest.highest_seen.max(max);
                    st.rest.empty_run = 0;
                }
                None => st.rest.empty_run += 1,
            }
            st.rest.next_id = end.saturating_add(1);
            if st.rest.next_id > hint && st.rest.empty_run >= self.pass.eng.settings.rest_empty_chunks_to_stop {
                match self.pass.list_people(Some(end), 1).await?.first() {
                    Some(p) => {
                        st.rest.next_id = p.marketo_id;
                        st.rest.empty_run = 0;
                        // The sweep jumps to the mirror's next person: the reads ahead are moot.
                        reads = FuturesOrdered::new();
                        starts.clear();
                        planned = p.marketo_id;
                    }
                    None => st.rest.complete = true,
                }
            }
            let cp = checkpoint::encode(StreamId::InitialSync, &*st, self.pass.now())?;
            self.pass.apply(page, Some(cp)).await?;
        }
        Ok(())
    }

    /// [`InitialMode::Auto`]: bulk or REST, whichever costs fewer Marketo calls, as a fresh
    /// initial state holding what the probes found (the bulk windows' origin, or the highest id
    /// the REST sweep must reach), so nothing is probed twice.
    pub(crate) async fn choose_initial_path(&mut self, until: DateTime<Utc>) -> Result<InitialState> {
        let origin = self.bulk_origin().await?;
        let mut windows = 0u32;
        while Self::window(origin, windows, until).is_some() {
            windows += 1;
        }
        // create + enqueue + status + file per window.
        let bulk_calls = u64::from(windows) * 4;
        let max_id = match self.probe_highest_id(bulk_calls).await {
            Ok(max) => max,
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => {
                self.pass.report.warnings.push(format!("highest-id probe failed, using bulk: {e}"));
                None
            }
        };
        let chunk = u64::from(self.pass.eng.settings.page_size.max(1));
        let (path, reason) = match max_id {
            Some(max) => {
                // One call per chunk of ids, plus the empty chunks that end the sweep.
                let rest_calls =
                    (max.max(0) as u64).div_ceil(chunk) + u64::from(self.pass.eng.settings.rest_empty_chunks_to_stop);
                let reason = format!(
                    "REST ≈ {rest_calls} calls (ids up to about {max}, {chunk} per call), bulk ≈ {bulk_calls} calls ({windows} windows of 31 days)"
                );
                (if rest_calls <= bulk_calls { InitialPath::Rest } else { InitialPath::Bulk }, reason)
            }
            None => (
                InitialPath::Bulk,
                format!(
                    "bulk ≈ {bulk_calls} calls ({windows} windows of 31 days); REST costs more (leads found past the ids that many REST calls sweep)"
                ),
            ),
        };
        tracing::info!(?path, %reason, "initial sync path chosen");
        self.pass.report.initial_path_reason = Some(format!("{path:?}: {reason}"));
        let mut state = InitialState::new(path, until, false);
        match path {
            InitialPath::Bulk => state.bulk.origin = Some(origin),
            InitialPath::Rest => state.rest.probed_max = max_id,
        }
        Ok(state)
    }

    /// The highest populated chunk of ids, found by doubling from id 1 and then halving between
    /// the last chunk with leads and the first without (a few calls). Empty chunks before the
    /// first one with leads do not stop the doubling (the lowest ids are often deleted, or start
    /// higher). `None` when the ids reach past what `budget` REST calls could sweep, or no probe
    /// found a lead (REST is not known to be cheaper then).
    async fn probe_highest_id(&mut self, budget: u64) -> Result<Option<i64>> {
        let chunk = i64::from(self.pass.eng.settings.page_size.max(1));
        let limit = i64::try_from(budget.saturating_add(1)).unwrap_or(i64::MAX).saturating_mul(chunk);
        let mut hi_found: Option<i64> = None;
        // Chunks 0, 1, 3, 7, 15, … (doubling the ids covered).
        let mut index = 0i64;
        let mut empty_at = None;
        loop {
            let probe = index.saturating_mul(chunk).saturating_add(1);
            if probe > limit {
                break;
            }
            match self.chunk_max(probe, chunk).await? {
                Some(max) => hi_found = Some(hi_found.map_or(max, |h| h.max(max))),
                None if hi_found.is_some() => {
                    empty_at = Some(probe);
                    break;
                }
                None => {}
            }
            index = index.saturating_mul(2).saturating_add(1);
        }
        let (Some(mut hi), Some(mut hi_found)) = (empty_at, hi_found) else { return Ok(None) };
        let mut lo = hi_found.max(1);
        // Halve between the last id known populated and the first empty chunk's start.
        while hi - lo > chunk {
            let mid = lo + (hi - lo) / 2;
            match self.chunk_max(mid, chunk).await? {
                Some(max) => {
                    hi_found = hi_found.max(max);
                    lo = max.max(mid);
                }
                None => hi = mid,
            }
        }
        Ok(Some(hi_found))
    }

    /// The highest lead id in `start .. start + chunk` (`None`: no lead there).
    async fn chunk_max(&mut self, start: i64, chunk: i64) -> Result<Option<i64>> {
        let fields = vec![LeadField::MarketoId.rest_name().to_string()];
        let records = self.id_chunk("highest id probe", start, chunk, &fields).await?;
        Ok(records.iter().filter_map(record_id).max())
    }

    /// Every record of the ids `start .. start + len` (all pages), with `fields`.
    async fn id_chunk(&mut self, what: &str, start: i64, len: i64, fields: &[String]) -> Result<Vec<LeadRecord>> {
        let values: Vec<String> = (start..start.saturating_add(len)).map(|i| i.to_string()).collect();
        let m = self.pass.eng.marketo.as_ref();
        let mut records = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let t = token.clone();
            let page = self.pass.marketo(what, || m.leads_by_filter("id", &values, fields, t.clone())).await?;
            records.extend(page.items);
            match page.next_token {
                Some(next) if page.more => token = Some(next),
                _ => break,
            }
        }
        Ok(records)
    }

    /// The highest lead id named by New Lead (12) activities of the probe window (0: none).
    async fn probe_max_id(&mut self, until: DateTime<Utc>) -> Result<i64> {
        let Some(window) = self.pass.eng.settings.rest_probe_window else { return Ok(0) };
        let since = until - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::days(7));
        let m = self.pass.eng.marketo.as_ref();
        let mut token = self.pass.marketo("paging token", || m.paging_token(since)).await?;
        let mut max = 0;
        for _ in 0..MAX_PROBE_PAGES {
            let t = token.clone();
            let page = self.pass.marketo("new leads probe", || m.activities(&t, &[NEW_LEAD], &[])).await?;
            max = page.items.iter().map(|a| a.lead_id).fold(max, i64::max);
            match page.next_token {
                Some(next) if page.more => token = next,
                _ => break,
            }
        }
        tracing::debug!(max, "REST sweep probe");
        Ok(max)
    }

    /// Window `index` from `origin`, both ends inclusive and clipped to `until`; `None` once the
    /// window starts after `until`.
    fn window(origin: DateTime<Utc>, index: u32, until: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let len = chrono::Duration::days(WINDOW_DAYS);
        let start = origin + len * i32::try_from(index).unwrap_or(i32::MAX);
        (start <= until).then(|| (start, (start + len - chrono::Duration::seconds(1)).min(until)))
    }

    /// Where window 0 starts: the oldest lead's `createdAt` day minus `probe_slack` (when
    /// `probe_oldest` and the probe finds one), never before `oldest_created_at`.
    pub(crate) async fn bulk_origin(&mut self) -> Result<DateTime<Utc>> {
        let floor = self.pass.eng.settings.oldest_created_at;
        let slack =
            chrono::Duration::from_std(self.pass.eng.settings.probe_slack).unwrap_or(chrono::Duration::days(31));
        if !self.pass.eng.settings.probe_oldest {
            return Ok(floor);
        }
        let oldest = match self.probe_oldest().await {
            Ok(t) => t,
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => {
                self.pass
                    .report
                    .warnings
                    .push(format!("oldest-lead probe failed, windows start at oldest_created_at: {e}"));
                None
            }
        };
        let origin = oldest
            .and_then(|t| t.date_naive().and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc() - slack)
            .map_or(floor, |t| t.max(floor));
        tracing::debug!(?oldest, %origin, "bulk windows start");
        Ok(origin)
    }

    /// The earliest `createdAt` among the leads of the first non-empty chunk of ids from 1 (ids
    /// grow with creation), reading at most `MAX_OLDEST_PROBE_CHUNKS` chunks.
    async fn probe_oldest(&mut self) -> Result<Option<DateTime<Utc>>> {
        let chunk = i64::from(self.pass.eng.settings.page_size);
        let fields = vec![LeadField::MarketoId.rest_name().to_string(), LeadField::CreatedAt.rest_name().to_string()];
        for n in 0..MAX_OLDEST_PROBE_CHUNKS {
            self.pass.check_cancel()?;
            let records = self.id_chunk("oldest lead probe", 1 + n * chunk, chunk, &fields).await?;
            let found = records.iter().any(|r| record_id(r).is_some());
            let oldest = records.iter().filter_map(|r| r.0.as_ref().ok().and_then(|l| l.created_at)).min();
            if found {
                return Ok(oldest);
            }
        }
        Ok(None)
    }

    async fn initial_bulk(&mut self, st: &mut InitialState) -> Result<BulkOutcome> {
        let fields = self.pass.fields().await?;
        let origin = match st.bulk.origin {
            Some(o) => o,
            None if st.bulk.window == 0 && st.bulk.export_id.is_none() && st.bulk.ahead.is_empty() => {
                let o = self.bulk_origin().await?;
                st.bulk.origin = Some(o);
                self.pass.put(StreamId::InitialSync, &*st).await?;
                o
            }
            // A checkpoint from before the probe: keep its windows.
            None => self.pass.eng.settings.oldest_created_at,
        };
        let until = st.started_at;
        let in_flight_max = self.pass.eng.settings.bulk_jobs_ahead.clamp(1, MAX_QUEUED_JOBS) as usize;
        // Set when the export quota refuses a job ahead: only the current window's jobs are
        // created from then on (the quota policy applies to those).
        let mut no_quota = false;
        loop {
            self.pass.check_cancel()?;
            let mut queue_full = false;
            if Self::window(origin, st.bulk.window, until).is_none() {
                return Ok(BulkOutcome::Done);
            }
            // The current window's job (a finished window hands over `ahead[0]` together with the
            // window index, so a missing one is created here, in front of the jobs ahead).
            if st.bulk.export_id.is_none() {
                let (start, end) = Self::window(origin, st.bulk.window, until).unwrap_or((origin, origin));
                match self.start_export(st, &fields, start, end, true).await? {
                    Created::Job(id) => {
                        st.bulk.export_id = Some(id);
                        no_quota = false;
                    }
                    Created::Busy | Created::NoQuota => continue,
                    Created::UseRest => {
                        self.cancel_ahead(st).await;
                        return Ok(BulkOutcome::UseRest);
                    }
                }
                st.bulk.rows_applied = 0;
                st.bulk.offset = 0;
                st.bulk.header.clear();
                self.pass.put(StreamId::InitialSync, &*st).await?;
            }
            // Create and enqueue later windows while Marketo works on this one.
            while !no_quota && !queue_full && 1 + st.bulk.ahead.len() < in_flight_max {
                let index = st.bulk.window + 1 + u32::try_from(st.bulk.ahead.len()).unwrap_or(u32::MAX);
                let Some((start, end)) = Self::window(origin, index, until) else { break };
                match self.start_export(st, &fields, start, end, false).await? {
                    Created::Job(id) => {
                        st.bulk.ahead.push(id);
                        self.pass.put(StreamId::InitialSync, &*st).await?;
                    }
                    Created::Busy | Created::UseRest => queue_full = true,
                    Created::NoQuota => no_quota = true,
                }
            }
            let export_id = st.bulk.export_id.clone().unwrap_or_default();
            match self.wait_export(&export_id).await? {
                ExportWait::Ready => {}
                ExportWait::Failed(detail) => {
                    st.bulk.failures += 1;
                    if st.bulk.failures >= MAX_EXPORT_FAILURES {
                        return Err(Error::Export { export_id, detail });
                    }
                    tracing::warn!(%export_id, %detail, "bulk export failed; creating another");
                    st.bulk = BulkPos {
                        window: st.bulk.window,
                        failures: st.bulk.failures,
                        origin: st.bulk.origin,
                        ahead: std::mem::take(&mut st.bulk.ahead),
                        ..BulkPos::default()
                    };
                    self.pass.put(StreamId::InitialSync, &*st).await?;
                    continue;
                }
            }
            self.read_export(st, &export_id).await?;
        }
    }

    /// Best-effort cancel of the jobs created ahead (the bulk path is being abandoned).
    async fn cancel_ahead(&mut self, st: &mut InitialState) {
        let m = self.pass.eng.marketo.as_ref();
        for id in std::mem::take(&mut st.bulk.ahead) {
            if let Err(e) = self.pass.marketo_no_wait("cancel lead export", || m.cancel_lead_export(&id)).await {
                tracing::debug!(export_id = %id, error = %e, "could not cancel a bulk export created ahead");
            }
        }
    }

    /// Creates and enqueues an export job for a window. For the current window (`current`) a
    /// full queue is waited out and an exhausted quota handled per [`BulkQuotaPolicy`]; for a
    /// window ahead, they answer [`Created::Busy`] / [`Created::NoQuota`] at once.
    async fn start_export(
        &mut self,
        st: &mut InitialState,
        fields: &[String],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        current: bool,
    ) -> Result<Created> {
        let m = self.pass.eng.marketo.as_ref();
        let start = trunc_secs(start);
        let end = trunc_secs(end);
        loop {
            let filter = ExportFilter::CreatedAt { start, end };
            match self.pass.marketo_no_wait("start lead export", || m.start_lead_export(fields, filter.clone())).await {
                Ok(job) => return Ok(Created::Job(job.id)),
                Err(Error::Port(salesync_core::Error::RateLimited { retry_after, .. })) => {
                    if !current {
                        return Ok(Created::Busy);
                    }
                    let delay = retry_after.unwrap_or(self.pass.eng.settings.export_poll);
                    self.pass.backoff("bulk export queue is full".into(), delay).await?;
                }
                Err(Error::Port(
                    e @ (salesync_core::Error::Rejected { .. } | salesync_core::Error::AccessDenied { .. }),
                )) if self.pass.eng.settings.initial_mode == InitialMode::Auto => {
                    if !current {
                        return Ok(Created::Busy);
                    }
                    tracing::info!(error = %e, "bulk export unavailable; initial sync continues via REST");
                    self.pass.report.warnings.push(format!("bulk export unavailable, using REST: {e}"));
                    return Ok(Created::UseRest);
                }
                Err(Error::Port(salesync_core::Error::QuotaExhausted { .. })) if !current => {
                    return Ok(Created::NoQuota);
                }
                Err(Error::Port(salesync_core::Error::QuotaExhausted { resets_at, detail, .. })) => {
                    match self.pass.eng.settings.bulk_quota {
                        BulkQuotaPolicy::FallBackToRest => {
                            st.bulk_quota_action = Some(BulkQuotaAction::FellBackToRest);
                            self.pass.report.bulk_quota_action = Some(BulkQuotaAction::FellBackToRest);
                            self.pass
                                .report
                                .warnings
                                .push(format!("bulk export quota exhausted, using REST: {detail}"));
                            return Ok(Created::UseRest);
                        }
                        BulkQuotaPolicy::Wait { retry_after } => {
                            let delay = resets_at
                                .and_then(|t| (t - self.pass.now()).to_std().ok())
                                .filter(|d| !d.is_zero())
                                .unwrap_or(retry_after);
                            st.bulk_quota_action = Some(BulkQuotaAction::Waited);
                            self.pass.report.bulk_quota_action = Some(BulkQuotaAction::Waited);
                            self.pass.backoff(format!("bulk export quota exhausted: {detail}"), delay).await?;
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn wait_export(&mut self, export_id: &str) -> Result<ExportWait> {
        let m = self.pass.eng.marketo.as_ref();
        let mut delay = self.pass.eng.settings.export_poll;
        loop {
            let job = match self.pass.marketo("export status", || m.lead_export_status(export_id)).await {
                Ok(job) => job,
                Err(Error::Port(salesync_core::Error::NotFound { .. })) => {
                    return Ok(ExportWait::Failed("export job not found (expired?)".into()));
                }
                Err(e) => return Err(e),
            };
            match job.state {
                ExportState::Completed => return Ok(ExportWait::Ready),
                ExportState::Failed | ExportState::Cancelled => {
                    return Ok(ExportWait::Failed(job.error.unwrap_or_else(|| format!("{:?}", job.state))));
                }
                ExportState::Created | ExportState::Queued | ExportState::Processing => {
                    self.pass.backoff(format!("bulk export {export_id} is {:?}", job.state), delay).await?;
                    delay = delay.saturating_mul(2).min(self.pass.eng.settings.export_poll_max);
                }
            }
        }
    }

    async fn read_export(&mut self, st: &mut InitialState, export_id: &str) -> Result<()> {
        if st.bulk.header.is_empty() {
            st.bulk.offset = 0;
            st.bulk.rows_applied = 0;
        }
        let offset = st.bulk.offset;
        let m = self.pass.eng.marketo.as_ref();
        let stream = self.pass.marketo("export file", || m.lead_export_file(export_id, offset)).await?;
        let mut rows = self.pass.eng.settings.export_parser.rows(stream, offset);
        let page_size = self.pass.eng.settings.page_size as usize;
        let mut batch: Vec<Result<MarketoLead, RecordError>> = Vec::new();
        let mut header = st.bulk.header.clone();
        loop {
            let next = tokio::select! {
                biased;
                _ = self.pass.cancel.cancelled() => return Err(Error::Cancelled),
                r = rows.next() => r.transpose(),
            };
            let row = match next {
                Ok(row) => row,
                Err(RowError::Port(e)) => return Err(e.into()),
                Err(RowError::Csv(e)) => {
                    return Err(Error::Export {
                        export_id: export_id.to_string(),
                        detail: format!("unreadable CSV: {}", e.0),
                    });
                }
            };
            match row {
                Some(row) if header.is_empty() => header = row.fields,
                Some(row) => {
                    batch.push(lead_from_row(&header, &row.fields));
                    if batch.len() >= page_size {
                        let mut pos = st.bulk.clone();
                        pos.rows_applied += batch.len() as u64;
                        pos.offset = row.end_offset;
                        pos.header = header.clone();
                        self.apply_rows(st, std::mem::take(&mut batch), pos).await?;
                        self.pass.check_cancel()?;
                    }
                }
                None => {
                    let mut ahead = st.bulk.ahead.clone();
                    let export_id = (!ahead.is_empty()).then(|| ahead.remove(0));
                    let pos = BulkPos {
                        window: st.bulk.window + 1,
                        origin: st.bulk.origin,
                        export_id,
                        ahead,
                        ..BulkPos::default()
                    };
                    self.apply_rows(st, batch, pos).await?;
                    return Ok(());
                }
            }
        }
    }

    /// Applies bulk rows with the bulk position that follows them.
    async fn apply_rows(
        &mut self,
        st: &mut InitialState,
        rows: Vec<Result<MarketoLead, RecordError>>,
        pos: BulkPos,
    ) -> Result<()> {
        let ids: Vec<i64> = rows.iter().filter_map(|r| r.as_ref().ok().map(|l| l.id)).collect();
        let mut page = self.pass.page_for(&ids).await?;
        let now = self.pass.now();
        for r in rows {
            match r {
                Ok(lead) => page.push(Incoming::Lead(lead.qualify(now))),
                Err(e) => page.error(e),
            }
        }
        let mut next = st.clone();
        next.bulk = pos;
        let cp = checkpoint::encode(StreamId::InitialSync, &next, self.pass.now())?;
        self.pass.apply(page, Some(cp)).await?;
        *st = next;
        Ok(())
    }
}

/// The Marketo id a record names, readable or not.
fn record_id(r: &LeadRecord) -> Option<i64> {
    match &r.0 {
        Ok(lead) => Some(lead.id),
        Err(e) => e.record_id,
    }
}

fn trunc_secs(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}
