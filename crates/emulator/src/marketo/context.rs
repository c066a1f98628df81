//! What every handler works with: the state shared by the handle and the server ([`Shared`]) and
//! one decoded request ([`Ctx`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::auth::Tokens;
use super::config::{MarketoCall, MarketoConfig, MarketoFault, Refusal};
use super::envelope::Reply;
use super::fields;
use super::jobs::processing_time;
use super::limits::{BusyModel, LimitState};
use super::state::Db;
use crate::faults::FaultPlan;
use crate::http::lock;

/// State shared by the handle and the server.
pub(crate) struct Shared {
    pub(crate) config: MarketoConfig,
    pub(crate) clients: Vec<(String, String)>,
    db: Mutex<Db>,
    tokens: Mutex<Tokens>,
    limits: Mutex<LimitState>,
    faults: Mutex<Arc<FaultPlan<MarketoFault>>>,
    identity_faults: Mutex<Arc<FaultPlan<MarketoFault>>>,
    log: Mutex<Vec<MarketoCall>>,
    rng: Mutex<SmallRng>,
    pub(crate) in_flight: Arc<AtomicU32>,
    pub(crate) peak: AtomicU32,
    /// Refused calls per [`Refusal`] (indexed by [`Refusal::index`]).
    pub(crate) refused: [AtomicU64; Refusal::COUNT],
    /// The co-tenant's calls per window ([`super::CoTenant::calls_per_window`]), changeable at run time.
    pub(crate) co_tenant_calls: AtomicU32,
    /// The co-tenant's in-flight share ([`super::CoTenant::in_flight`]), changeable at run time.
    pub(crate) co_tenant_in_flight: AtomicU32,
    /// The busy model and its random source.
    busy: Mutex<(BusyModel, SmallRng)>,
    /// The daily quota set at run time (`u64::MAX`: the configured one).
    pub(crate) quota_override: AtomicU64,
}

impl Shared {
    pub(crate) fn new(config: MarketoConfig) -> Self {
        let mut clients = vec![(config.client_id.clone(), config.client_secret.clone())];
        clients.extend(config.additional_clients.iter().cloned());
        let cat = fields::catalogue(config.linkedin_field, config.expose_oppty_id);
        Shared {
            rng: Mutex::new(SmallRng::seed_from_u64(config.fault_seed)),
            clients,
            db: Mutex::new(Db::new(cat)),
            tokens: Mutex::new(Tokens::default()),
            limits: Mutex::new(LimitState::default()),
            faults: Mutex::new(Arc::new(FaultPlan::default())),
            identity_faults: Mutex::new(Arc::new(FaultPlan::default())),
            log: Mutex::new(Vec::new()),
            in_flight: Arc::new(AtomicU32::new(0)),
            peak: AtomicU32::new(0),
            refused: Default::default(),
            co_tenant_calls: AtomicU32::new(config.co_tenant.calls_per_window),
            co_tenant_in_flight: AtomicU32::new(config.co_tenant.in_flight),
            busy: Mutex::new((config.busy, SmallRng::seed_from_u64(config.busy.seed))),
            quota_override: AtomicU64::new(u64::MAX),
            config,
        }
    }

    pub(crate) fn set_busy(&self, busy: BusyModel) {
        *lock(&self.busy) = (busy, SmallRng::seed_from_u64(busy.seed));
    }

    pub(crate) fn busy_model(&self) -> BusyModel {
        lock(&self.busy).0
    }

    /// Draws the busy answer for one call: 615 first, then 606 (both draws are always made while
    /// a fraction is set, so a seeded sequence of calls gets the same answers).
    pub(crate) fn busy_draw(&self) -> Option<Refusal> {
        let mut g = lock(&self.busy);
        let (model, rng) = &mut *g;
        if model.is_off() {
            return None;
        }
        let a: f64 = rng.gen_range(0.0..1.0);
        let b: f64 = rng.gen_range(0.0..1.0);
        if a < model.rate_615_fraction {
            Some(Refusal::ConcurrencyInjected)
        } else if b < model.rate_606_fraction {
            Some(Refusal::RateInjected)
        } else {
            None
        }
    }

    /// Counts a refused call under its cause.
    pub(crate) fn count_refusal(&self, r: Refusal) {
        self.refused[r.index()].fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.config.clock.now()
    }

    pub(crate) fn issued_tokens(&self) -> Vec<String> {
        lock(&self.tokens).issued()
    }

    pub(crate) fn db(&self) -> MutexGuard<'_, Db> {
        lock(&self.db)
    }

    pub(crate) fn log(&self) -> MutexGuard<'_, Vec<MarketoCall>> {
        lock(&self.log)
    }

    pub(crate) fn tokens(&self) -> MutexGuard<'_, Tokens> {
        lock(&self.tokens)
    }

    pub(crate) fn limits(&self) -> MutexGuard<'_, LimitState> {
        lock(&self.limits)
    }

    pub(crate) fn faults_slot(&self) -> MutexGuard<'_, Arc<FaultPlan<MarketoFault>>> {
        lock(&self.faults)
    }

    pub(crate) fn identity_faults_slot(&self) -> MutexGuard<'_, Arc<FaultPlan<MarketoFault>>> {
        lock(&self.identity_faults)
    }

    /// A fresh `requestId` (`"<4-5 hex>#<11 hex>"`) from the seeded random source.
    pub(crate) fn request_id(&self) -> String {
        let mut rng = lock(&self.rng);
        let a: u32 = rng.gen_range(0x1000..0x10_0000);
        let b: u64 = rng.gen_range(0x100_0000_0000..0x1000_0000_0000);
        format!("{a:x}#{b:011x}")
    }
}

/// One request, decoded.
pub(crate) struct Ctx<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: HashMap<String, String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) client_id: String,
    pub(crate) now: DateTime<Utc>,
}

impl Ctx<'_> {
    /// A query (or `_method=GET` form) parameter, empty values treated as absent.
    pub(crate) fn param(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str).filter(|v| !v.trim().is_empty())
    }

    /// The JSON body (612 without an `application/json` content type, 609 when malformed).
    pub(crate) fn json(&self) -> Result<Value, Reply> {
        let ct = self.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !ct.to_ascii_lowercase().starts_with("application/json") {
            return Err(Reply::err("612", "Invalid Content Type"));
        }
        serde_json::from_slice(&self.body).map_err(|_| Reply::err("609", "Invalid JSON"))
    }

    /// The `input` array of a JSON write (1003 when absent, or above the batch limit).
    pub(crate) fn input_of<'b>(&self, body: &'b Value) -> Result<&'b Vec<Value>, Reply> {
        let Some(input) = body.get("input").and_then(Value::as_array) else {
            return Err(Reply::err("1003", "input cannot be blank"));
        };
        if input.len() > self.max_batch() {
            return Err(Reply::err("1003", format!("Batch size exceeded, max {}", self.max_batch())));
        }
        Ok(input)
    }

    /// The JSON body of a write and its `input` array, taken out of it (the errors of
    /// [`Ctx::json`] and [`Ctx::input_of`]).
    pub(crate) fn json_input(&self) -> Result<(Value, Vec<Value>), Reply> {
        let mut body = self.json()?;
        self.input_of(&body)?;
        let input = match body.get_mut("input").map(Value::take) {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        };
        Ok((body, input))
    }

    /// The configured batch limit.
    pub(crate) fn max_batch(&self) -> usize {
        self.shared.config.limits.max_batch
    }

    /// `batchSize` validated against the batch limit (default = the limit).
    pub(crate) fn batch_size(&self) -> Result<usize, Reply> {
        let max = self.max_batch();
        match self.param("batchSize") {
            None => Ok(max),
            Some(s) => match s.trim().parse::<usize>() {
                Ok(n) if n >= 1 && n <= max => Ok(n),
                _ => Err(Reply::err("1003", format!("Invalid batchSize '{s}', must be between 1 and {max}"))),
            },
        }
    }

    /// Whether a job of `records` rows that began processing at `started_at` has spent its
    /// processing time (the configured fixed plus per-1,000-rows parts) by `now`; never when it
    /// has not begun.
    pub(crate) fn processing_done(&self, started_at: Option<DateTime<Utc>>, records: u64) -> bool {
        let config = &self.shared.config;
        let needed = processing_time(config.bulk_processing_time, config.bulk_processing_per_1000_rows, records);
        started_at.is_some_and(|s| self.now - s >= needed)
    }
}
