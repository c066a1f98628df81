//! What every handler works with: the state shared by the handle and the server ([`Shared`]) and
//! one decoded data request ([`Req`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::config::{SalesforceCall, SalesforceConfig, SalesforceFault};
use super::limits::{LongRunning, Running};
use super::schema::{FType, FieldDef, Schema};
use super::state::State;
use super::store::{Org, WriteCtx};
use crate::faults::FaultPlan;
use crate::http::lock;
use crate::sfid;

/// State shared by the handle and the server.
pub(crate) struct Shared {
    pub(crate) config: SalesforceConfig,
    pub(crate) schema: Schema,
    pub(crate) base_url: String,
    pub(crate) addr: SocketAddr,
    pub(crate) org_id: String,
    pub(crate) user_id: String,
    pub(crate) state: Mutex<State>,
    pub(crate) faults: Mutex<Arc<FaultPlan<SalesforceFault>>>,
    pub(crate) log: Mutex<Vec<SalesforceCall>>,
    running: LongRunning,
    /// The daily API limit set at run time (`u64::MAX`: the configured one).
    pub(crate) limit_override: AtomicU64,
}

impl Shared {
    /// Registers a running request; returns its guard and how many others are long-running.
    pub(crate) fn start_request(&self, data: bool) -> (Running<'_>, usize) {
        self.running.start(data, self.config.long_running_threshold)
    }
}

impl Shared {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.config.clock.now()
    }

    /// Runs a write against the org as the integration user.
    pub(crate) fn with_org<R>(&self, f: impl FnOnce(&mut Org, &WriteCtx<'_>) -> R) -> R {
        let cx = WriteCtx { schema: &self.schema, now: self.now(), user: &self.user_id };
        let mut st = lock(&self.state);
        f(&mut st.org, &cx)
    }

    /// Reads the org.
    pub(crate) fn read_org<R>(&self, f: impl FnOnce(&Org, &Schema) -> R) -> R {
        let st = lock(&self.state);
        f(&st.org, &self.schema)
    }

    /// The rolling 24-hour API limit in force.
    pub(crate) fn daily_api_limit(&self) -> u64 {
        match self.limit_override.load(Ordering::SeqCst) {
            u64::MAX => self.config.daily_api_limit,
            n => n,
        }
    }

    pub(crate) fn usage(&self) -> u64 {
        let now = self.now();
        lock(&self.state).used(now)
    }

    pub(crate) fn expire_sessions(&self) {
        lock(&self.state).tokens.expire_all();
    }

    pub(crate) fn issued_tokens(&self) -> Vec<String> {
        lock(&self.state).tokens.handed_out()
    }
}

/// Whether a field gets a value index: external ids, `Email`, `IsConverted` and references other
/// than the owner and audit users (few distinct values, no lookups by them).
fn indexed(f: &FieldDef) -> bool {
    f.external_id
        || matches!(f.name.as_str(), "Email" | "IsConverted")
        || (matches!(f.ty, FType::Ref(_)) && !matches!(f.name.as_str(), "OwnerId" | "CreatedById" | "LastModifiedById"))
}

impl Shared {
    /// The state of a new org served at `addr`: the schema, value indexes on the indexed fields
    /// and the integration user every token acts as.
    pub(crate) fn new(config: SalesforceConfig, addr: SocketAddr) -> Self {
        let schema = Schema::new(&config);
        let mut state = State::default();
        state.tokens.refresh = config.refresh_token.clone();
        for o in &schema.objects {
            for f in o.fields.iter().filter(|f| indexed(f)) {
                state.org.index_field(o.name, &f.name);
            }
        }
        let shared = Shared {
            base_url: format!("http://{addr}"),
            addr,
            org_id: sfid::mint("00D", 1),
            user_id: sfid::mint("005", 999_999),
            schema,
            config,
            state: Mutex::new(state),
            faults: Mutex::new(Arc::new(FaultPlan::default())),
            log: Mutex::new(Vec::new()),
            running: LongRunning::default(),
            limit_override: AtomicU64::new(u64::MAX),
        };
        let mut user = serde_json::Map::new();
        user.insert("FirstName".into(), json!("Integration"));
        user.insert("LastName".into(), json!("User"));
        user.insert("Username".into(), json!(shared.config.username));
        user.insert("Email".into(), json!("integration@salesync.example"));
        let uid = shared.user_id.clone();
        if let Err(e) = shared.with_org(|org, cx| org.create(cx, "User", &user, Some(&uid))) {
            tracing::warn!(error = %e, "could not create the integration user");
        }
        shared
    }
}

/// One decoded data request.
pub(crate) struct Req<'a> {
    pub(crate) method: &'a str,
    pub(crate) version: String,
    pub(crate) segs: Vec<String>,
    pub(crate) query: HashMap<String, String>,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a [u8],
    pub(crate) now: DateTime<Utc>,
}

/// Whether a path segment is an API version (`vNN.N`).
pub(crate) fn is_version(s: &str) -> bool {
    s.strip_prefix('v').and_then(|v| v.split_once('.')).is_some_and(|(a, b)| {
        !a.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit()) && !b.is_empty()
    })
}
