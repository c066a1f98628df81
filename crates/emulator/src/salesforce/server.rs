//! The axum server: authentication, API allocation, fault injection, logging and the response
//! headers every REST response carries.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use data_encoding::BASE64;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::auth::{self, Identity, Tokens};
use super::bulk::BulkJob;
use super::errors::SalesforceApiError as E;
use super::rest;
use super::schema::{FType, FieldDef, Schema};
use super::soql::Query;
use super::store::{Id18, Org, WriteCtx};
use super::{SalesforceCall, SalesforceConfig, SalesforceFault};
use crate::faults::{FaultAction, FaultPlan};
use crate::sfid;

/// Locks a mutex, ignoring poisoning.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// A query cursor kept for `nextRecordsUrl`: the query and the ids of its result rows, selected
/// once; each page renders its own rows.
pub(crate) struct Cursor {
    pub(crate) query: Query,
    pub(crate) ids: Vec<Id18>,
    pub(crate) all_rows: bool,
    pub(crate) batch: usize,
    pub(crate) last_used: DateTime<Utc>,
}

/// Mutable state behind one lock.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) org: Org,
    pub(crate) tokens: Tokens,
    usage: VecDeque<DateTime<Utc>>,
    pub(crate) cursors: HashMap<String, Cursor>,
    pub(crate) cursor_seq: u64,
    /// Bulk API 2.0 query jobs by id.
    pub(crate) bulk_jobs: std::collections::BTreeMap<String, BulkJob>,
    pub(crate) bulk_seq: u64,
    /// Creation times of the query jobs of the rolling 24 hours (`DailyBulkV2QueryJobs`).
    pub(crate) bulk_created: VecDeque<DateTime<Utc>>,
    /// Bulk API 2.0 ingest jobs by id (ids from the same sequence as the query jobs).
    pub(crate) ingest_jobs: std::collections::BTreeMap<String, super::ingest::IngestJob>,
}

impl State {
    fn prune_usage(&mut self, now: DateTime<Utc>) {
        let from = now - Duration::hours(24);
        while self.usage.front().is_some_and(|t| *t <= from) {
            self.usage.pop_front();
        }
    }

    /// Counts `n` more API calls at `now` (a composite batch counts each subrequest).
    pub(crate) fn count_calls(&mut self, now: DateTime<Utc>, n: usize) {
        for _ in 0..n {
            self.usage.push_back(now);
        }
    }

    /// Calls in the rolling window.
    pub(crate) fn used(&mut self, now: DateTime<Utc>) -> u64 {
        self.prune_usage(now);
        self.usage.len() as u64
    }
}

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
    running: Mutex<HashMap<u64, Instant>>,
    next_request: AtomicU64,
    /// The daily API limit set at run time (`u64::MAX`: the configured one).
    pub(crate) limit_override: AtomicU64,
}

/// Removes a request from the running set when dropped.
struct Running<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        lock(&self.shared.running).remove(&self.id);
    }
}

impl Shared {
    /// Registers a running data request; returns the guard and how many others are long-running.
    fn start_request(&self, data: bool) -> (Running<'_>, usize) {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let mut running = lock(&self.running);
        let long = running.values().filter(|t| t.elapsed() >= self.config.long_running_threshold).count();
        if data {
            running.insert(id, Instant::now());
        }
        (Running { shared: self, id }, long)
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

/// The running server task.
pub(crate) struct ServerTask {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl ServerTask {
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let mut handle = self.handle;
        if tokio::time::timeout(std::time::Duration::from_secs(2), &mut handle).await.is_err() {
            handle.abort();
        }
    }
}

/// Whether a field gets a value index: external ids, `Email`, `IsConverted` and references other
/// than the owner and audit users (few distinct values, no lookups by them).
fn indexed(f: &FieldDef) -> bool {
    f.external_id
        || matches!(f.name.as_str(), "Email" | "IsConverted")
        || (matches!(f.ty, FType::Ref(_)) && !matches!(f.name.as_str(), "OwnerId" | "CreatedById" | "LastModifiedById"))
}

/// Binds, builds the shared state and spawns the server.
pub(crate) async fn serve(config: SalesforceConfig) -> std::io::Result<(Arc<Shared>, ServerTask)> {
    let listener = tokio::net::TcpListener::bind(config.bind).await?;
    let addr = listener.local_addr()?;
    let schema = Schema::new(&config);
    let mut state = State::default();
    state.tokens.refresh = config.refresh_token.clone();
    for o in &schema.objects {
        for f in o.fields.iter().filter(|f| indexed(f)) {
            state.org.index_field(o.name, &f.name);
        }
    }
    let shared = Arc::new(Shared {
        base_url: format!("http://{addr}"),
        addr,
        org_id: sfid::mint("00D", 1),
        user_id: sfid::mint("005", 999_999),
        schema,
        config,
        state: Mutex::new(state),
        faults: Mutex::new(Arc::new(FaultPlan::default())),
        log: Mutex::new(Vec::new()),
        running: Mutex::new(HashMap::new()),
        next_request: AtomicU64::new(0),
        limit_override: AtomicU64::new(u64::MAX),
    });
    let mut user = serde_json::Map::new();
    user.insert("FirstName".into(), json!("Integration"));
    user.insert("LastName".into(), json!("User"));
    user.insert("Username".into(), json!(shared.config.username));
    user.insert("Email".into(), json!("integration@salesync.example"));
    let uid = shared.user_id.clone();
    if let Err(e) = shared.with_org(|org, cx| org.create(cx, "User", &user, Some(&uid))) {
        tracing::warn!(error = %e, "could not create the integration user");
    }
    let app = Router::new().fallback(handle).with_state(shared.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let res = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "salesforce emulator server stopped with an error");
        }
    });
    Ok((shared, ServerTask { stop: tx, handle }))
}

/// A response before rendering.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Option<Value>,
    /// A non-JSON body with its content type (Bulk API 2.0 CSV results).
    pub(crate) text: Option<(&'static str, String)>,
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub(crate) fn json(status: u16, body: Value) -> Self {
        Self { status, body: Some(body), text: None, headers: Vec::new() }
    }

    pub(crate) fn empty(status: u16) -> Self {
        Self { status, body: None, text: None, headers: Vec::new() }
    }

    pub(crate) fn text(status: u16, content_type: &'static str, body: String) -> Self {
        Self { status, body: None, text: Some((content_type, body)), headers: Vec::new() }
    }

    pub(crate) fn err(e: E) -> Self {
        Self::json(e.status, Value::Array(vec![e.rest_json()]))
    }

    fn error_code(&self) -> Option<String> {
        match &self.body {
            Some(Value::Array(a)) => {
                a.first().and_then(|e| e.get("errorCode")).and_then(Value::as_str).map(str::to_string)
            }
            Some(Value::Object(o)) if self.status >= 400 => o.get("error").and_then(Value::as_str).map(str::to_string),
            _ => None,
        }
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

fn is_version(s: &str) -> bool {
    s.strip_prefix('v').and_then(|v| v.split_once('.')).is_some_and(|(a, b)| {
        !a.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit()) && !b.is_empty()
    })
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, tok) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth")).then(|| tok.trim().to_string())
}

fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = BASE64.decode(b64.trim().as_bytes()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    let dec = |x: &str| url::form_urlencoded::parse(format!("a={x}").as_bytes()).next().map(|(_, v)| v.into_owned());
    Some((dec(u)?, dec(p)?))
}

enum Transport {
    Normal,
    Drop,
    Malformed,
}

/// The longest request URI (path and query) Salesforce accepts, in bytes: longer ones get 414.
pub(crate) const MAX_URI_BYTES: usize = 16_384;

async fn handle(AxState(shared): AxState<Arc<Shared>>, req: Request) -> Response {
    let is_data = req.uri().path().starts_with("/services/data/");
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        let call = SalesforceCall {
            at: shared.now(),
            method: req.method().as_str().to_ascii_uppercase(),
            path: req.uri().path().chars().take(200).collect(),
            status: 0,
            error_code: None,
            fault: None,
        };
        let e = E::new(
            414,
            "URI_TOO_LONG",
            format!("The length of the URI exceeds the {MAX_URI_BYTES} byte limit ({uri_len} bytes)"),
        );
        return finish(&shared, call, Reply::err(e), Transport::Normal, false);
    }
    let (_running, long_running) = shared.start_request(is_data);
    if let Some(l) = shared.config.latency {
        tokio::time::sleep(l).await;
    }
    let now = shared.now();
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_ascii_uppercase();
    let path = parts.uri.path().to_string();
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024).await.unwrap_or_default();
    let mut call = SalesforceCall {
        at: now,
        method: method.clone(),
        path: path.clone(),
        status: 0,
        error_code: None,
        fault: None,
    };
    let segs: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect();
    let mut transport = Transport::Normal;
    let mut limit_header = false;

    let reply = if method == "POST" && path.trim_end_matches('/') == "/services/oauth2/token" {
        match consult(&shared, &method, &path, &mut call).await {
            Some(FaultAction::Error(f)) => Reply::err(f.to_error()),
            Some(FaultAction::DropConnection) => {
                return finish(&shared, call, Reply::empty(200), Transport::Drop, false);
            }
            Some(FaultAction::MalformedBody) => {
                return finish(&shared, call, Reply::empty(200), Transport::Malformed, false);
            }
            other => {
                if matches!(other, Some(FaultAction::ApplyThenDrop)) {
                    transport = Transport::Drop;
                }
                let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
                let who = Identity { base_url: &shared.base_url, org_id: &shared.org_id, user_id: &shared.user_id };
                let mut st = lock(&shared.state);
                let (status, b) = auth::token(&mut st.tokens, &shared.config, &who, &form, basic(&parts.headers), now);
                Reply::json(status, b)
            }
        }
    } else if segs.len() == 2 && segs[0] == "services" && segs[1] == "data" && method == "GET" {
        let versions: Vec<Value> = (20..=62)
            .map(|v| json!({"label": format!("API {v}.0"), "url": format!("/services/data/v{v}.0"), "version": format!("{v}.0")}))
            .collect();
        Reply::json(200, Value::Array(versions))
    } else if segs.len() >= 3 && segs[0] == "services" && segs[1] == "data" {
        limit_header = true;
        if !is_version(&segs[2]) {
            Reply::err(E::not_found())
        } else {
            let token_ok = {
                let st = lock(&shared.state);
                bearer(&parts.headers).is_some_and(|t| st.tokens.valid(&t, now, &shared.config))
            };
            let over = {
                let mut st = lock(&shared.state);
                st.used(now) >= shared.daily_api_limit()
            };
            if !token_ok {
                Reply::err(E::invalid_session())
            } else if is_data && long_running >= shared.config.long_running_limit {
                Reply::err(E::new(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."))
            } else if over {
                Reply::err(E::new(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))
            } else {
                {
                    let mut st = lock(&shared.state);
                    st.usage.push_back(now);
                }
                let fault = consult(&shared, &method, &path, &mut call).await;
                match fault {
                    Some(FaultAction::Error(f)) => Reply::err(f.to_error()),
                    Some(FaultAction::DropConnection) => {
                        return finish(&shared, call, Reply::empty(200), Transport::Drop, true);
                    }
                    Some(FaultAction::MalformedBody) => {
                        return finish(&shared, call, Reply::empty(200), Transport::Malformed, true);
                    }
                    other => {
                        if matches!(other, Some(FaultAction::ApplyThenDrop)) {
                            transport = Transport::Drop;
                        }
                        let r = Req {
                            method: &method,
                            version: segs[2].clone(),
                            segs: segs[3..].to_vec(),
                            query,
                            headers: &parts.headers,
                            body: &body,
                            now,
                        };
                        let mut st = lock(&shared.state);
                        rest::dispatch(&shared, &mut st, &r)
                    }
                }
            }
        }
    } else {
        Reply::err(E::not_found())
    };
    finish(&shared, call, reply, transport, limit_header)
}

async fn consult(
    shared: &Shared,
    method: &str,
    path: &str,
    call: &mut SalesforceCall,
) -> Option<FaultAction<SalesforceFault>> {
    let plan = lock(&shared.faults).clone();
    let action = plan.check(method, path)?;
    call.fault = Some(
        match &action {
            FaultAction::Error(_) => "error",
            FaultAction::DropConnection => "dropped",
            FaultAction::Delay(_) => "delay",
            FaultAction::MalformedBody => "malformed",
            FaultAction::ApplyThenDrop => "apply-then-drop",
        }
        .to_string(),
    );
    if let FaultAction::Delay(d) = action {
        tokio::time::sleep(d).await;
        return None;
    }
    Some(action)
}

fn finish(
    shared: &Shared,
    mut call: SalesforceCall,
    reply: Reply,
    transport: Transport,
    limit_header: bool,
) -> Response {
    call.error_code = reply.error_code();
    let mut resp = match transport {
        Transport::Drop => {
            call.status = 0;
            let stream = futures::stream::once(async {
                tokio::task::yield_now().await;
                Err::<Bytes, std::io::Error>(std::io::Error::other("connection dropped by fault injection"))
            });
            let mut r = Response::new(Body::from_stream(stream));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json;charset=UTF-8"));
            tracing::debug!(method = %call.method, path = %call.path, "salesforce emulator dropped a connection");
            lock(&shared.log).push(call);
            return r;
        }
        Transport::Malformed => {
            let mut r = Response::new(Body::from("{\"totalSize\":1,\"done\":true,\"records\":[{\"attributes\":"));
            *r.status_mut() = StatusCode::OK;
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json;charset=UTF-8"));
            r
        }
        Transport::Normal => {
            let mut r = match (&reply.body, reply.text) {
                (Some(b), _) => {
                    let mut r = Response::new(Body::from(serde_json::to_vec(b).unwrap_or_default()));
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json;charset=UTF-8"));
                    r
                }
                (None, Some((ct, text))) => {
                    let mut r = Response::new(Body::from(text));
                    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
                    r
                }
                (None, None) => Response::new(Body::empty()),
            };
            *r.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            for (k, v) in &reply.headers {
                if let Ok(v) = HeaderValue::from_str(v) {
                    r.headers_mut().insert(*k, v);
                }
            }
            r
        }
    };
    if limit_header {
        let used = shared.usage();
        if let Ok(v) = HeaderValue::from_str(&format!("api-usage={used}/{}", shared.daily_api_limit())) {
            resp.headers_mut().insert("sforce-limit-info", v);
        }
    }
    call.status = resp.status().as_u16();
    tracing::debug!(method = %call.method, path = %call.path, status = call.status, error = ?call.error_code, "salesforce emulator call");
    lock(&shared.log).push(call);
    resp
}
