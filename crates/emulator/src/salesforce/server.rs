//! The axum server at the top of the emulator: authentication, API allocation, fault injection,
//! logging and the response headers every REST response carries, and the router that hands each
//! data request to its operation family (REST resources, composite, Bulk API 2.0 query and ingest).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use data_encoding::BASE64;
use serde_json::{Value, json};

use super::auth::{self, Identity};
use super::config::{SalesforceCall, SalesforceConfig, SalesforceFault};
use super::context::{Req, Shared, is_version};
use super::envelope::Reply;
use super::errors::SalesforceApiError as E;
use super::limits::MAX_URI_BYTES;
use super::state::State;
use super::{bulk, composite, ingest, rest};
use crate::faults::FaultAction;
use crate::http::{self, Injected, JSON_UTF8, ServerTask, Transport, lock};

/// Binds, builds the shared state and spawns the server.
pub(crate) async fn serve(config: SalesforceConfig) -> std::io::Result<(Arc<Shared>, ServerTask)> {
    let (listener, addr) = http::bind(config.bind).await?;
    let shared = Arc::new(Shared::new(config, addr));
    let app = Router::new().fallback(handle).with_state(shared.clone());
    Ok((shared, http::spawn(listener, app, "salesforce")))
}

/// Routes one authenticated, counted data request: the composite resources and Bulk API 2.0 jobs
/// here, every other resource through [`rest::dispatch`] (which composite subrequests use too).
fn route(sh: &Shared, st: &mut State, r: &Req<'_>) -> Reply {
    let segs: Vec<&str> = r.segs.iter().map(String::as_str).collect();
    if let Some(reply) = rest::unsupported_media_type(r, &segs) {
        return reply;
    }
    let m = r.method;
    let res = match segs.as_slice() {
        ["composite"] if m == "POST" => composite::composite(sh, st, r),
        ["composite", "batch"] => match m {
            "POST" => composite::batch(sh, st, r),
            _ => Err(E::method_not_allowed(m, "POST")),
        },
        ["composite", "tree", t] => match m {
            "POST" => composite::tree(sh, st, r, t),
            _ => Err(E::method_not_allowed(m, "POST")),
        },
        ["jobs", "query", rest @ ..] => bulk::dispatch(sh, st, r, rest),
        ["jobs", "ingest", rest @ ..] => ingest::dispatch(sh, st, r, rest),
        _ => return rest::dispatch(sh, st, r),
    };
    res.unwrap_or_else(Reply::err)
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
            Injected::Error(f) => Reply::err(f.to_error()),
            Injected::Break(t) => return finish(&shared, call, Reply::empty(200), t, false),
            injected => {
                if matches!(injected, Injected::ApplyThenDrop) {
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
                lock(&shared.state).count_calls(now, 1);
                match consult(&shared, &method, &path, &mut call).await {
                    Injected::Error(f) => Reply::err(f.to_error()),
                    Injected::Break(t) => return finish(&shared, call, Reply::empty(200), t, true),
                    injected => {
                        if matches!(injected, Injected::ApplyThenDrop) {
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
                        route(&shared, &mut st, &r)
                    }
                }
            }
        }
    } else {
        Reply::err(E::not_found())
    };
    finish(&shared, call, reply, transport, limit_header)
}

/// Consults the fault plan for a call: notes the fault that fires in the call log and spends its
/// delay.
async fn consult(shared: &Shared, method: &str, path: &str, call: &mut SalesforceCall) -> Injected<SalesforceFault> {
    let plan = lock(&shared.faults).clone();
    let action = plan.check(method, path);
    call.fault = action.as_ref().map(|a| {
        match a {
            FaultAction::Error(_) => "error",
            FaultAction::DropConnection => "dropped",
            FaultAction::Delay(_) => "delay",
            FaultAction::MalformedBody => "malformed",
            FaultAction::ApplyThenDrop => "apply-then-drop",
        }
        .to_string()
    });
    http::inject(action).await
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
            let r = http::response(200, Some(JSON_UTF8), &[], http::dropped_body(None));
            tracing::debug!(method = %call.method, path = %call.path, "salesforce emulator dropped a connection");
            lock(&shared.log).push(call);
            return r;
        }
        Transport::Malformed => {
            http::response(200, Some(JSON_UTF8), &[], "{\"totalSize\":1,\"done\":true,\"records\":[{\"attributes\":")
        }
        Transport::Normal => {
            let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).as_u16();
            match (&reply.body, reply.text) {
                (Some(b), _) => {
                    http::response(status, Some(JSON_UTF8), &reply.headers, serde_json::to_vec(b).unwrap_or_default())
                }
                (None, Some((ct, text))) => http::response(status, Some(ct), &reply.headers, text),
                (None, None) => http::response(status, None, &reply.headers, Body::empty()),
            }
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
