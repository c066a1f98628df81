//! Marketo Engage REST API emulator.
//!
//! A stateful axum server written from `shared/reference/marketo-api.md` (§1–§7, §11). Start it with
//! [`MarketoEmulator::start`]; `/identity`, `/rest` and `/bulk` all live under
//! [`MarketoEmulator::base_url`]. Tests seed and mutate the lead database through the Rust API
//! ([`MarketoEmulator::seed_world`], [`MarketoEmulator::update_lead`], …), which emits the activities
//! the real system would.
//!
//! # Emulated
//! - Identity (`GET|POST /identity/oauth/token`, params in the query): same token until expiry with a
//!   shrinking `expires_in`; first use of an expired token → 602, later uses / unknown / missing → 601;
//!   bad credentials → HTTP 401 `{"error":"invalid_client",…}`. Bearer header only: an
//!   `access_token` query parameter is answered with 601 (switch: [`MarketoConfig::reject_query_access_token`]).
//! - Envelope: `requestId` `"<4-5 hex>#<11 hex>"`, string error codes, HTTP 200 for API errors
//!   (HTTP 502 for an injected 502), no `result` on failure, no `errors`/`warnings` on success.
//! - Limits ([`MarketoLimits`]): rolling window on the emulator clock (606), in-flight count (615),
//!   daily quota per America/Chicago day with US DST rules (607), batch 300, URI 8 KB (414, plain
//!   text), body 1 MiB (413). Identity and calls ending in ★ codes (601/602/604/605/608/611) are not
//!   counted. Calls rejected with 606/607/615 are not counted either (they did no work) — a guess.
//!   `POST …?_method=GET` with a form body behaves as GET.
//! - A shared, busy instance (reference §3: the window and the in-flight limit are per instance,
//!   shared by all integrations): a co-tenant ([`CoTenant`], [`MarketoConfig::co_tenant`],
//!   [`MarketoEmulator::set_co_tenant`], [`MarketoEmulator::set_co_tenant_in_flight`]) holds a
//!   steady share of the rolling window and of the in-flight slots; with a co-tenant of 50 calls
//!   per window our clients get 50 through per window and 606 beyond. Random busy answers
//!   ([`BusyModel`], [`MarketoConfig::busy`], [`MarketoEmulator::set_busy`]) answer a seeded
//!   fraction of calls 606 or 615 without doing the work or counting them.
//! - Who caused a refusal: every 606/615/607 carries a [`Refusal`] in the call log
//!   ([`MarketoCall::refusal`]) and is counted in [`MarketoEmulator::limit_rejections`]. A
//!   window-full 606 is [`Refusal::RateOwn`] when our own counted calls alone filled the window
//!   (it would have been full without the co-tenant: the client's fault), else
//!   [`Refusal::RateShared`]; busy-model and fault-plan 606s are [`Refusal::RateInjected`]; 615
//!   likewise. A test asserts "the client never overflowed the window" with `rate_own == 0` and
//!   [`MarketoEmulator::max_calls_in_any_window`] (our calls only).
//! - Timing: [`MarketoConfig::latency`] delays every admitted call while it counts as in flight,
//!   holding no lock (other calls proceed concurrently); refused calls answer at once. A bulk job
//!   stays in Processing for [`MarketoConfig::bulk_processing_time`] plus
//!   [`MarketoConfig::bulk_processing_per_1000_rows`] × rows / 1,000 of emulator-clock time (both 0
//!   by default; [`REALISTIC_BULK_PROCESSING_PER_1000_ROWS_MS`] for benches).
//! - 612 (POST JSON without `application/json`), 609 (malformed JSON), 605 (known path, wrong
//!   method), 610 (unknown path under `/rest` or `/bulk`, HTTP 200 envelope); other paths → HTTP 404.
//! - Leads: get by filter (paging, default fields, 1006/1011/1003), by id, describe, describe2, sync
//!   (`createOnly|updateOnly|createOrUpdate|createDuplicate`, `lookupField`, per-record `reasons`
//!   1003/1004/1005/1006/1007), delete (`input` body or `id` query), merge (`leadId`/`leadIds`, ≤25
//!   losers else 1080).
//! - Activities: paging token (base32 of `"<ts>,<lastActivityId>"`, ordered by activity date then
//!   id), activities.json (≤10 types, ≤30 lead ids, `scan_block` short/empty pages), leadchanges
//!   (12 and 13 filtered to requested `fields`), deletedleads (37, hidden after
//!   [`MarketoConfig::deleted_lead_retention`], default 14 days), types.json (standard ids of §5.5
//!   incl. 39–48 plus approved custom types).
//! - Custom activities: type list/describe(`draft=true`)/create/update/approve/discardDraft/delete,
//!   attribute create/update/delete, 10-type (1027) and 20-attribute (1028) limits, add
//!   (`external.json`, ≤300, per-record `added` or `skipped` with `errors`).
//! - Bulk extract of leads and activities: create/enqueue/status/file/cancel/list; Created → Queued →
//!   Processing → Completed|Cancelled; ≤2 processing, ≤10 queued (1029), daily byte quota (1029
//!   "Export daily quota exceeded"); CSV/TSV/SSV with `null` literals; `Range` → 206; 404 plain text
//!   before completion; `fileSize` + `sha256:` checksum; jobs visible only to the creating client.
//! - `GET /rest/v1/stats/usage.json`.
//! - Faults through [`crate::faults::FaultPlan`]`<`[`MarketoFault`]`>`, consulted for every admitted
//!   API call (after auth, concurrency, rate and quota checks); identity has its own plan
//!   ([`MarketoEmulator::set_identity_faults`]).
//!
//! # Deliberate deviations and guesses
//! - Merge: losers disappear without a Delete Lead (37) activity; the winner gets one Merge Leads
//!   (32) activity whose `Merge IDs` attribute is the comma-separated loser ids, and empty winner
//!   fields are filled from the losers (emitting 13s).
//! - Change Data Value: one activity per changed field; `updatedAt` moves on every change (the real
//!   `updatedAt` only reflects standard fields).
//! - Unapproved/unknown custom activity type → record skipped with 1003; unknown attribute → 1006;
//!   unknown lead → 1004; attributes JSON > 65,536 bytes → 1049. Custom attributes read back as
//!   `{name: <display name>, value, apiName}`.
//! - Missing/invalid request parameters → 1003; unparsable `sinceDatetime` → 704; unknown export id
//!   (or another client's) → 1003. Bulk filter problems (range > 31 days, milliseconds, not exactly
//!   one filter, list filters) → 1003; `updatedAt` with `bulk_updated_at_filter: false` → 1035.
//! - Bulk jobs move on every bulk call: a queued job starts when fewer than two are processing, and
//!   completes once its processing time (fixed plus per 1,000 rows, see above) of clock time has
//!   passed since it started (default 0: complete on the next poll). Data is snapshotted when
//!   processing starts. SSV uses `;`.
//! - The co-tenant is modelled in its steady state: a change takes effect on the next call (no
//!   ramp-up over a window), its calls are not in our daily quota and are never logged. Fault-plan
//!   606/615 answers are still counted against the window and quota (the plan is consulted after
//!   admission, as before); busy-model ones are not. The busy model applies even with
//!   [`MarketoLimits::enabled`] off; the co-tenant does not (there is no window then).
//! - A dropped connection answers with headers and then a body that errors, so hyper aborts the
//!   connection; clients see a transport error while reading. `ApplyThenDrop` on a bulk `file.json`
//!   download sends the first half of the bytes before breaking off (outcome `"dropped-partial"`),
//!   so resuming with `Range` can be tested.
//! - `sfdcOpptyId` is always accepted as a `filterType`, but is a returnable field only with
//!   [`MarketoConfig::expose_oppty_id`]; `linkedInProfileURL` exists only with
//!   [`MarketoConfig::linkedin_field`].

// The layers, each importing only those below it: `envelope`, `fields`, `limits`, `auth`,
// `config` (the vocabulary); `jobs` and `records` (what the database keeps besides leads),
// `state` (the lead database and activity log), `context` (what a request works on); the
// operation families `leads`, `programs`, `activities`, `custom_activities`, `bulk` (export) and
// `bulk_import`; `server` (admission and routing) at the top, under this handle.
mod activities;
mod auth;
mod bulk;
mod bulk_import;
mod config;
mod context;
mod custom_activities;
mod envelope;
mod fields;
mod jobs;
mod leads;
mod limits;
mod programs;
mod records;
mod server;
mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

pub use config::{MarketoCall, MarketoConfig, MarketoFault, REALISTIC_BULK_PROCESSING_PER_1000_ROWS_MS, Refusal};
pub use limits::{BusyModel, CoTenant, MarketoLimits};

use crate::clock::Clock;
use crate::faults::FaultPlan;
use crate::seed::{SeedSfType, SeedWorld};

/// Calls turned away by the emulator's own limits (see [`MarketoEmulator::limit_rejections`]),
/// with who caused them ([`Refusal`]).
///
/// `rate` and `concurrency` count the limits proper (window full, too many in flight, whether our
/// calls or the co-tenant's filled them); injected answers (busy model, fault plan) are only in
/// the `*_injected` fields. "Salesync never overflowed the window itself" is `rate_own == 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitRejections {
    /// 606: the rate window was full (`rate_own + rate_shared`).
    pub rate: u64,
    /// 615: too many calls in flight (`concurrency_own + concurrency_shared`).
    pub concurrency: u64,
    /// 607: the daily quota was used up.
    pub quota: u64,
    /// 606 where our own calls alone filled the window ([`Refusal::RateOwn`]).
    pub rate_own: u64,
    /// 606 where the window was full only with the co-tenant's calls ([`Refusal::RateShared`]).
    pub rate_shared: u64,
    /// 606 injected by the busy model or the fault plan ([`Refusal::RateInjected`]).
    pub rate_injected: u64,
    /// 615 where our own calls alone exceeded the in-flight limit ([`Refusal::ConcurrencyOwn`]).
    pub concurrency_own: u64,
    /// 615 caused by the co-tenant's in-flight share ([`Refusal::ConcurrencyShared`]).
    pub concurrency_shared: u64,
    /// 615 injected by the busy model or the fault plan ([`Refusal::ConcurrencyInjected`]).
    pub concurrency_injected: u64,
}

/// A running emulator: a cheap `Clone` handle on shared state and the server task.
#[derive(Clone)]
pub struct MarketoEmulator {
    shared: Arc<context::Shared>,
    addr: SocketAddr,
    task: Arc<std::sync::Mutex<Option<crate::http::ServerTask>>>,
}

impl std::fmt::Debug for MarketoEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarketoEmulator").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl MarketoEmulator {
    /// Binds `config.bind` and serves in a background task.
    pub async fn start(config: MarketoConfig) -> std::io::Result<MarketoEmulator> {
        let shared = Arc::new(context::Shared::new(config));
        let (addr, task) = server::serve(Arc::clone(&shared)).await?;
        tracing::info!(%addr, "marketo emulator listening");
        Ok(MarketoEmulator { shared, addr, task: Arc::new(std::sync::Mutex::new(Some(task))) })
    }

    /// `http://127.0.0.1:PORT`; identity, REST and bulk paths are all under it.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepted client id.
    pub fn client_id(&self) -> &str {
        &self.shared.config.client_id
    }

    /// Accepted client secret.
    pub fn client_secret(&self) -> &str {
        &self.shared.config.client_secret
    }

    /// The emulator clock.
    pub fn clock(&self) -> &Clock {
        &self.shared.config.clock
    }

    /// Every access token identity has issued so far, expired ones included: tests use them to
    /// check that no token ever shows up in logs or error messages.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.issued_tokens()
    }

    /// Loads a seeded world: one lead per person (with its id), each with a New Lead (12) activity
    /// dated at the person's `createdAt`.
    pub fn seed_world(&self, world: &SeedWorld) {
        let mut db = self.shared.db();
        for p in &world.people {
            let mut m = Map::new();
            let mut put = |k: &str, v: &Option<String>| {
                if let Some(v) = v {
                    m.insert(k.to_string(), json!(v));
                }
            };
            put("firstName", &p.first_name);
            put("lastName", &p.last_name);
            put("email", &p.email);
            put("company", &p.company);
            put("title", &p.title);
            put("phone", &p.phone);
            if self.shared.config.linkedin_field {
                put("linkedInProfileURL", &p.linkedin_url);
            }
            put("leadSource", &p.lead_source);
            put("sfdcLeadId", &p.sf_lead_id);
            put("sfdcContactId", &p.sf_contact_id);
            put("sfdcAccountId", &p.sf_account_id);
            put("sfdcOpptyId", &p.sf_opportunity_id);
            put("sfdcLeadOwnerId", &p.owner_id);
            if let Some(t) = p.sf_type {
                m.insert("sfdcType".into(), json!(if t == SeedSfType::Lead { "Lead" } else { "Contact" }));
            }
            m.insert("unsubscribed".into(), json!(p.unsubscribed));
            db.insert_lead(Some(p.marketo_id), m, p.created_at, p.updated_at, "Seeded");
        }
    }

    /// Creates a lead now (New Lead activity); returns its id. An integer `id` in `fields` is used
    /// when no lead has it yet, else the next free id is taken.
    pub fn create_lead(&self, fields: Map<String, Value>) -> i64 {
        let now = self.shared.now();
        let mut db = self.shared.db();
        let id = fields.get("id").and_then(Value::as_i64).filter(|id| *id > 0 && !db.leads.contains_key(id));
        db.insert_lead(id, fields, now, now, "Web service API")
    }

    /// Changes fields (a null value clears one); one Change Data Value (13) per changed field.
    /// False when the lead does not exist.
    pub fn update_lead(&self, id: i64, changes: Map<String, Value>) -> bool {
        let now = self.shared.now();
        self.shared.db().update_lead(id, changes, now, "Web service API")
    }

    /// Deletes a lead (Delete Lead activity, visible through deletedleads.json). False when absent.
    pub fn delete_lead(&self, id: i64) -> bool {
        let now = self.shared.now();
        self.shared.db().delete_lead(id, now)
    }

    /// Merges `losers` into `winner` (see the module docs). False when any id is unknown.
    pub fn merge_leads(&self, winner: i64, losers: &[i64]) -> bool {
        let now = self.shared.now();
        self.shared.db().merge_leads(winner, losers, now)
    }

    /// Appends an activity of any type (e.g. a standard MSIA type such as 39 Send Sales Email) for
    /// `lead_id`, dated now on the emulator clock; returns its id. Attributes are `(name, value)`.
    pub fn add_activity(
        &self,
        lead_id: i64,
        activity_type_id: i64,
        primary_attribute_value: Option<&str>,
        attributes: Vec<(String, Value)>,
    ) -> i64 {
        let now = self.shared.now();
        let activity = state::Activity {
            id: 0,
            lead_id,
            date: now,
            type_id: activity_type_id,
            campaign_id: None,
            primary_value_id: None,
            primary_value: primary_attribute_value.map(str::to_string),
            attributes: attributes
                .into_iter()
                .map(|(n, v)| state::Attr { name: n, api_name: None, value: v })
                .collect(),
            change: None,
        };
        self.shared.db().push_activity(activity)
    }

    /// One lead with every stored field (including `sfdcOpptyId`).
    pub fn lead(&self, id: i64) -> Option<Map<String, Value>> {
        self.shared.db().leads.get(&id).cloned()
    }

    /// All current leads, by id.
    pub fn leads(&self) -> Vec<Map<String, Value>> {
        self.shared.db().leads.values().cloned().collect()
    }

    /// Custom activities added through `POST /rest/v1/activities/external.json`, in order, as
    /// `{id, marketoGUID, leadId, activityDate, activityTypeId, apiName, primaryAttributeValue, attributes}`.
    pub fn custom_activities(&self) -> Vec<Value> {
        self.shared.db().custom_added.clone()
    }

    /// How many logged custom activities carry each value of the attribute `api_name` (e.g. a
    /// client's own idempotency key, to check that nothing was logged twice). Activities without
    /// that attribute count under the empty string.
    pub fn custom_activity_counts(&self, api_name: &str) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for a in &self.shared.db().custom_added {
            let value = a["attributes"]
                .as_array()
                .and_then(|attrs| attrs.iter().find(|x| x["apiName"] == api_name))
                .and_then(|x| x["value"].as_str())
                .unwrap_or_default();
            *out.entry(value.to_string()).or_default() += 1;
        }
        out
    }

    /// Replaces the fault plan.
    pub fn set_faults(&self, plan: FaultPlan<MarketoFault>) {
        *self.shared.faults_slot() = Arc::new(plan);
    }

    /// The fault plan in force (e.g. to read [`FaultPlan::applied`]).
    pub fn faults(&self) -> Arc<FaultPlan<MarketoFault>> {
        Arc::clone(&self.shared.faults_slot())
    }

    /// Replaces the fault plan consulted for identity calls (`/identity/oauth/token`), which the
    /// main plan never sees. `Error(f)` answers HTTP 502 for `"502"`, else HTTP 401 with an OAuth
    /// error body whose `error` is `f.code`.
    pub fn set_identity_faults(&self, plan: FaultPlan<MarketoFault>) {
        *self.shared.identity_faults_slot() = Arc::new(plan);
    }

    /// Every request so far.
    pub fn call_log(&self) -> Vec<MarketoCall> {
        self.shared.log().clone()
    }

    /// The most counted calls that fell inside any one rate window (same clock-or-real-time rule as
    /// admission, see [`MarketoLimits::window`]).
    pub fn max_calls_in_any_window(&self) -> u32 {
        let times: Vec<(DateTime<Utc>, Instant)> =
            self.shared.log().iter().filter(|c| c.counted).map(|c| (c.clock_at, c.at)).collect();
        limits::max_in_window(times, self.shared.config.limits.window)
    }

    /// The most counted calls of one client (by client id) that fell inside any one rate window:
    /// tells apart processes sharing one instance.
    pub fn max_client_calls_in_any_window(&self, client_id: &str) -> u32 {
        let times: Vec<(DateTime<Utc>, Instant)> = self
            .shared
            .log()
            .iter()
            .filter(|c| c.counted && c.client_id.as_deref() == Some(client_id))
            .map(|c| (c.clock_at, c.at))
            .collect();
        limits::max_in_window(times, self.shared.config.limits.window)
    }

    /// How many calls the emulator turned away so far, by cause (see [`LimitRejections`]).
    pub fn limit_rejections(&self) -> LimitRejections {
        let get = |r: Refusal| self.shared.refused[r.index()].load(Ordering::SeqCst);
        LimitRejections {
            rate: get(Refusal::RateOwn) + get(Refusal::RateShared),
            concurrency: get(Refusal::ConcurrencyOwn) + get(Refusal::ConcurrencyShared),
            quota: get(Refusal::Quota),
            rate_own: get(Refusal::RateOwn),
            rate_shared: get(Refusal::RateShared),
            rate_injected: get(Refusal::RateInjected),
            concurrency_own: get(Refusal::ConcurrencyOwn),
            concurrency_shared: get(Refusal::ConcurrencyShared),
            concurrency_injected: get(Refusal::ConcurrencyInjected),
        }
    }

    /// Sets the co-tenant's calls per rolling window from the next call on (see [`CoTenant`]):
    /// e.g. `set_co_tenant(limits.calls_per_window)` makes the other integrations suddenly take
    /// the whole window, so every call of ours gets 606 ([`Refusal::RateShared`]).
    pub fn set_co_tenant(&self, calls_per_window: u32) {
        self.shared.co_tenant_calls.store(calls_per_window, Ordering::SeqCst);
    }

    /// Sets the in-flight slots the co-tenant holds from the next call on (see [`CoTenant`]).
    pub fn set_co_tenant_in_flight(&self, in_flight: u32) {
        self.shared.co_tenant_in_flight.store(in_flight, Ordering::SeqCst);
    }

    /// The co-tenant in force.
    pub fn co_tenant(&self) -> CoTenant {
        CoTenant {
            calls_per_window: self.shared.co_tenant_calls.load(Ordering::SeqCst),
            in_flight: self.shared.co_tenant_in_flight.load(Ordering::SeqCst),
        }
    }

    /// Replaces the busy model from the next call on; the random draws restart from `busy.seed`.
    pub fn set_busy(&self, busy: BusyModel) {
        self.shared.set_busy(busy);
    }

    /// The busy model in force.
    pub fn busy(&self) -> BusyModel {
        self.shared.busy_model()
    }

    /// Changes the daily quota from now on (the day's count is kept), e.g. to make a running
    /// test run out of it.
    pub fn set_daily_quota(&self, quota: u64) {
        self.shared.quota_override.store(quota, Ordering::SeqCst);
    }

    /// Counted calls so far in the current US-Central day (the daily quota's count).
    pub fn daily_calls(&self) -> u64 {
        let now = self.shared.now();
        let st = self.shared.limits();
        if st.day == Some(limits::central_day(now)) { st.day_count } else { 0 }
    }

    /// The most API calls that were in flight at once (identity excluded).
    pub fn max_concurrent_seen(&self) -> u32 {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(self) {
        let task = match self.task.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(t) = task {
            t.stop().await;
        }
    }
}
