//! The axum server at the top of the emulator: admission (size limits, auth, concurrency, rate,
//! quota, faults), the call log, and the router that hands each request to its operation family.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;
use serde_json::Value;

use super::auth::{self, TokenCheck};
use super::config::{MarketoCall, Refusal};
use super::context::{Ctx, Shared};
use super::envelope::{Reply, fmt_ts, is_uncounted};
use super::limits::{Admit, InFlight, MarketoLimits, central_day};
use super::{activities, bulk, bulk_import, custom_activities, leads, programs};
use crate::http::{self, Injected, JSON_UTF8, ServerTask, Transport};

/// Binds and spawns the server.
pub(crate) async fn serve(shared: Arc<Shared>) -> std::io::Result<(SocketAddr, ServerTask)> {
    let (listener, addr) = http::bind(shared.config.bind).await?;
    let app = Router::new().fallback(handle).with_state(shared);
    Ok((addr, http::spawn(listener, app, "marketo")))
}

/// Query or form parameters. A key given more than once (`fields=id&fields=email`, the
/// Swagger's `collectionFormat: multi`, what marketorestpython sends for a list) is one
/// comma-separated list, as Marketo reads it: list parameters take either form.
fn parse_form(s: &str) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(s.as_bytes()).into_owned() {
        match out.get_mut(&k) {
            Some(prev) => {
                prev.push(',');
                prev.push_str(&v);
            }
            None => {
                out.insert(k, v);
            }
        }
    }
    out
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let at = Instant::now();
    let now = shared.now();
    let (parts, body) = req.into_parts();
    let mut method = parts.method.as_str().to_ascii_uppercase();
    let path = parts.uri.path().to_string();
    let target_len = parts.uri.path_and_query().map_or(path.len(), |p| p.as_str().len());
    let mut call = MarketoCall {
        at,
        clock_at: now,
        method: method.clone(),
        path: path.clone(),
        counted: false,
        outcome: None,
        http_status: 0,
        client_id: None,
        refusal: None,
    };
    let mut limits = shared.config.limits.clone();
    let quota = shared.quota_override.load(Ordering::SeqCst);
    if quota != u64::MAX {
        limits.daily_quota = quota;
    }
    if target_len > limits.max_uri_bytes {
        return finish(&shared, call, Reply::text(414, "Request-URI Too Long"), Transport::Normal);
    }
    // Bulk lead import takes files up to 10 MB: ten times the REST body limit (1 MB by default).
    let max_body = if path == "/bulk/v1/leads.json" && method == "POST" {
        limits.max_body_bytes.saturating_mul(10)
    } else {
        limits.max_body_bytes
    };
    let body = match axum::body::to_bytes(body, max_body.saturating_add(1)).await {
        Ok(b) if b.len() <= max_body => b,
        _ => return finish(&shared, call, Reply::text(413, "Request Entity Too Large"), Transport::Normal),
    };
    let mut query = parts.uri.query().map(parse_form).unwrap_or_default();
    let content_type =
        parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    // The long-URI form: `POST …` with `_method=GET` in the query string or in a form body
    // (marketorestpython puts it in the body), the would-be query string as the body.
    let form_body = method == "POST" && content_type.starts_with("application/x-www-form-urlencoded");
    let form = if form_body { parse_form(&String::from_utf8_lossy(&body)) } else { HashMap::new() };
    let as_get = |m: Option<&String>| m.is_some_and(|m| m.eq_ignore_ascii_case("GET"));
    if method == "POST" && (as_get(query.get("_method")) || as_get(form.get("_method"))) {
        method = "GET".into();
        call.method = method.clone();
        query.remove("_method");
        for (k, v) in &form {
            if k == "_method" {
                continue;
            }
            match query.get_mut(k) {
                Some(prev) => {
                    prev.push(',');
                    prev.push_str(v);
                }
                None => {
                    query.insert(k.clone(), v.clone());
                }
            }
        }
    }

    if path == "/identity/oauth/token" {
        let fault = {
            let plan = Arc::clone(&shared.identity_faults_slot());
            plan.check(&method, &path)
        };
        let mut transport = Transport::Normal;
        match http::inject(fault).await {
            Injected::Proceed => {}
            Injected::Error(f) => {
                let status = if f.code == "502" { 502 } else { 401 };
                let reply = Reply::Json {
                    status,
                    body: serde_json::json!({"error": f.code, "error_description": f.message}),
                    outcome: Some(f.code.clone()),
                };
                return finish(&shared, call, reply, Transport::Normal);
            }
            Injected::Break(Transport::Drop) => {
                return finish(&shared, call, Reply::ok_void(), Transport::Drop);
            }
            // A malformed identity answer still issues the token.
            Injected::Break(t) => transport = t,
            Injected::ApplyThenDrop => transport = Transport::Drop,
        }
        let reply = if method == "GET" || method == "POST" {
            let mut params = query.clone();
            params.extend(form);
            let mut tokens = shared.tokens();
            auth::identity(&mut tokens, &params, &shared.clients, &shared.config.api_user, now, shared.config.token_ttl)
        } else {
            Reply::text(405, "Method Not Allowed")
        };
        return finish(&shared, call, reply, transport);
    }
    if !(path.starts_with("/rest/") || path.starts_with("/bulk/")) {
        return finish(&shared, call, Reply::text(404, "Not Found"), Transport::Normal);
    }

    // Authentication (★ codes: never counted).
    if shared.config.reject_query_access_token && query.contains_key("access_token") {
        return finish(&shared, call, Reply::err("601", "Access token invalid"), Transport::Normal);
    }
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|s| s.trim().to_string());
    let client_id = match shared.tokens().check(bearer.as_deref(), now) {
        TokenCheck::Valid(c) => c,
        TokenCheck::Invalid(code, msg) => return finish(&shared, call, Reply::err(code, msg), Transport::Normal),
    };
    call.client_id = Some(client_id.clone());

    // Concurrency (our calls, then with the co-tenant's share).
    let (_guard, in_flight) = InFlight::enter(&shared.in_flight, &shared.peak);
    if limits.enabled {
        let shared_in_flight = shared.co_tenant_in_flight.load(Ordering::SeqCst);
        let refusal = if in_flight > limits.max_concurrent {
            Some(Refusal::ConcurrencyOwn)
        } else if in_flight.saturating_add(shared_in_flight) > limits.max_concurrent {
            Some(Refusal::ConcurrencyShared)
        } else {
            None
        };
        if let Some(r) = refusal {
            return refuse(&shared, call, r, &limits);
        }
    }
    // Random busy answers: no work, not counted.
    if let Some(r) = shared.busy_draw() {
        return refuse(&shared, call, r, &limits);
    }
    // Rate window (with the co-tenant's calls) and daily quota.
    let co_tenant = shared.co_tenant_calls.load(Ordering::SeqCst);
    let slot = match shared.limits().admit(&limits, co_tenant, now, at) {
        Admit::Ok(id) => id,
        Admit::Rate { own } => {
            let r = if own { Refusal::RateOwn } else { Refusal::RateShared };
            return refuse(&shared, call, r, &limits);
        }
        Admit::Quota => return refuse(&shared, call, Refusal::Quota, &limits),
    };
    call.counted = true;

    let fault = {
        let plan = Arc::clone(&shared.faults_slot());
        plan.check(&method, &path)
    };
    let mut transport = Transport::Normal;
    let mut skip_work = None;
    match http::inject(fault).await {
        Injected::Proceed => {}
        Injected::Error(f) => {
            let injected = match f.code.as_str() {
                "606" => Some(Refusal::RateInjected),
                "615" => Some(Refusal::ConcurrencyInjected),
                _ => None,
            };
            if let Some(r) = injected {
                shared.count_refusal(r);
                call.refusal = Some(r);
            }
            let mut r = Reply::err(&f.code, f.message.clone());
            if let Reply::Envelope { status, .. } = &mut r {
                *status = if f.code == "502" { 502 } else { 200 };
            }
            skip_work = Some(r);
        }
        Injected::Break(t) => {
            transport = t;
            skip_work = Some(Reply::ok_void());
        }
        Injected::ApplyThenDrop => transport = Transport::Drop,
    }
    if let Some(lat) = shared.config.latency {
        tokio::time::sleep(lat).await;
    }
    let reply = match skip_work {
        Some(r) => r,
        None => {
            let ctx = Ctx {
                shared: &shared,
                method: method.clone(),
                path: path.clone(),
                query,
                headers: parts.headers,
                body,
                client_id,
                now,
            };
            dispatch(&ctx)
        }
    };
    if reply.outcome().is_some_and(is_uncounted) {
        shared.limits().release(slot);
        call.counted = false;
    }
    finish(&shared, call, reply, transport)
}

/// Answers a refused call (606/615/607 with the documented literal messages) and counts its cause.
fn refuse(shared: &Shared, mut call: MarketoCall, r: Refusal, limits: &MarketoLimits) -> Response {
    shared.count_refusal(r);
    call.refusal = Some(r);
    let msg = match r.code() {
        "606" => {
            format!("Max rate limit '{}' exceeded with in '{}' secs", limits.calls_per_window, limits.window.as_secs())
        }
        "615" => format!("Concurrent access limit '{}' reached", limits.max_concurrent),
        _ => "Daily quota reached".to_string(),
    };
    if r != Refusal::Quota {
        tracing::debug!(method = %call.method, path = %call.path, refusal = ?r, "marketo emulator refused a call");
    }
    finish(shared, call, Reply::err(r.code(), msg), Transport::Normal)
}

fn finish(shared: &Shared, mut call: MarketoCall, reply: Reply, transport: Transport) -> Response {
    call.outcome = reply.outcome().map(str::to_string);
    let resp = match transport {
        Transport::Drop => {
            call.outcome = Some("dropped".into());
            call.http_status = 0;
            // A file download (ApplyThenDrop on file.json) breaks off after half the bytes, so clients
            // can exercise resuming with `Range`; everything else breaks before any body byte.
            let (partial, status, content_type, headers) = match reply {
                Reply::Raw { status, content_type, headers, body, .. } if body.len() > 1 && status < 300 => {
                    (Some(Bytes::from(body[..body.len() / 2].to_vec())), status, content_type, headers)
                }
                _ => (None, 200, JSON_UTF8, Vec::new()),
            };
            if partial.is_some() {
                call.outcome = Some("dropped-partial".into());
            }
            let r = http::response(status, Some(content_type), &headers, http::dropped_body(partial));
            shared.log().push(call);
            return r;
        }
        Transport::Malformed => {
            call.outcome = Some("malformed".into());
            let body = format!("{{\"requestId\":\"{}\",\"success\":true,\"result\":[{{\"id\":", shared.request_id());
            json_response(200, body.into_bytes())
        }
        Transport::Normal => render(shared, reply),
    };
    call.http_status = resp.status().as_u16();
    tracing::debug!(method = %call.method, path = %call.path, status = call.http_status, outcome = ?call.outcome, "marketo emulator call");
    shared.log().push(call);
    resp
}

fn json_response(status: u16, body: Vec<u8>) -> Response {
    http::response(status, Some(JSON_UTF8), &[], body)
}

fn render(shared: &Shared, reply: Reply) -> Response {
    match reply {
        Reply::Envelope { status, body, .. } => {
            let mut full = serde_json::Map::new();
            full.insert("requestId".into(), Value::String(shared.request_id()));
            full.extend(body);
            json_response(status, serde_json::to_vec(&Value::Object(full)).unwrap_or_default())
        }
        Reply::Json { status, body, .. } => json_response(status, serde_json::to_vec(&body).unwrap_or_default()),
        Reply::Raw { status, content_type, headers, body, .. } => {
            http::response(status, Some(content_type), &headers, body)
        }
    }
}

fn bad_method() -> Reply {
    Reply::err("605", "HTTP Method not supported")
}

fn dispatch(ctx: &Ctx<'_>) -> Reply {
    let segs: Vec<&str> = ctx.path.trim_start_matches('/').trim_end_matches('/').split('/').collect();
    let m = ctx.method.as_str();
    let get = m == "GET";
    let post = m == "POST";
    match segs.as_slice() {
        ["rest", "v1", "leads.json"] if get => leads::get_by_filter(ctx),
        ["rest", "v1", "leads.json"] if post => leads::sync(ctx),
        ["rest", "v1", "lead", id] if id.ends_with(".json") => {
            if get {
                leads::get_by_id(ctx, id.trim_end_matches(".json"))
            } else {
                bad_method()
            }
        }
        ["rest", "v1", "leads", "describe.json"] if get => leads::describe(ctx),
        ["rest", "v1", "leads", "describe2.json"] if get => leads::describe2(ctx),
        ["rest", "v1", "leads", "delete.json"] if post => leads::delete(ctx),
        // Not in the Swagger, but real instances have long answered it like `leads/delete.json`
        // (marketorestpython's `delete_lead` uses it).
        ["rest", "v1", "leads.json"] if m == "DELETE" => leads::delete(ctx),
        ["rest", "v1", "leads", id, "merge.json"] if post => leads::merge(ctx, id),
        ["rest", "v1", "leads", "partitions.json"] if get => programs::partitions(ctx),
        ["rest", "v1", "leads", "partitions.json"] if post => programs::update_partitions(ctx),
        ["rest", "v1", "leads", "push.json"] if post => programs::push(ctx),
        ["rest", "v1", "leads", "submitForm.json"] if post => programs::submit_form(ctx),
        ["rest", "v1", "leads", "programs", id] if get && id.ends_with(".json") => {
            programs::leads_by_program(ctx, id.trim_end_matches(".json"))
        }
        ["rest", "v1", "leads", "programs", id, "status.json"] if post => programs::change_status(ctx, id),
        ["rest", "v1", "program" | "programs", "members", "describe.json"] if get => programs::describe_members(ctx),
        ["rest", "v1", "leads", "schema", "fields.json"] if get => leads::schema_fields(ctx),
        ["rest", "v1", "leads", "schema", "fields.json"] if post => leads::create_fields(ctx),
        ["rest", "v1", "leads", "schema", "fields", name] if get && name.ends_with(".json") => {
            leads::schema_field_by_name(ctx, name.trim_end_matches(".json"))
        }
        ["rest", "v1", "leads", "schema", "fields", name] if post && name.ends_with(".json") => {
            leads::update_field(ctx, name.trim_end_matches(".json"))
        }
        [
            "rest",
            "v1",
            "leads",
            id,
            kind @ ("listMembership.json" | "programMembership.json" | "smartCampaignMembership.json"),
        ] if get => leads::memberships(ctx, id, kind),
        ["rest", "v1", "leads", id, "associate.json"] if post => leads::associate(ctx, id),
        ["rest", "v1", "activities", "pagingtoken.json"] if get => activities::paging_token(ctx),
        ["rest", "v1", "activities.json"] if get => activities::get_activities(ctx),
        ["rest", "v1", "activities", "leadchanges.json"] if get => activities::lead_changes(ctx),
        ["rest", "v1", "activities", "deletedleads.json"] if get => activities::deleted_leads(ctx),
        ["rest", "v1", "activities", "types.json"] if get => activities::types(ctx),
        ["rest", "v1", "activities", "external.json"] if post => custom_activities::add(ctx),
        ["rest", "v1", "activities", "external", "types.json"] if get => custom_activities::list(ctx),
        ["rest", "v1", "activities", "external", "type.json"] if post => custom_activities::create(ctx),
        ["rest", "v1", "activities", "external", "type", api] if post && api.ends_with(".json") => {
            custom_activities::update(ctx, api.trim_end_matches(".json"))
        }
        ["rest", "v1", "activities", "external", "type", api, "describe.json"] if get => {
            custom_activities::describe(ctx, api)
        }
        ["rest", "v1", "activities", "external", "type", api, op] if post => custom_activities::type_op(ctx, api, op),
        ["rest", "v1", "activities", "external", "type", api, "attributes", op] if post => {
            custom_activities::attributes(ctx, api, op)
        }
        ["rest", "v1", "stats", "usage.json"] if get => stats(ctx, false, 1),
        ["rest", "v1", "stats", "usage", "last7days.json"] if get => stats(ctx, false, 7),
        ["rest", "v1", "stats", "errors.json"] if get => stats(ctx, true, 1),
        ["rest", "v1", "stats", "errors", "last7days.json"] if get => stats(ctx, true, 7),
        ["bulk", "v1", "leads.json"] if post => bulk_import::create(ctx),
        ["bulk", "v1", "leads", "batch", id] if get && id.ends_with(".json") => {
            bulk_import::status(ctx, id.trim_end_matches(".json"))
        }
        ["bulk", "v1", "leads", "batch", id, kind @ ("failures.json" | "warnings.json")] if get => {
            bulk_import::file(ctx, id, *kind == "warnings.json")
        }
        ["bulk", "v1", kind @ ("leads" | "activities"), "export.json"] if get => bulk::list(ctx, kind),
        ["bulk", "v1", kind @ ("leads" | "activities"), "export", "create.json"] if post => bulk::create(ctx, kind),
        ["bulk", "v1", kind @ ("leads" | "activities"), "export", id, op @ ("enqueue.json" | "cancel.json")]
            if post =>
        {
            bulk::job_op(ctx, kind, id, op)
        }
        ["bulk", "v1", kind @ ("leads" | "activities"), "export", id, "status.json"] if get => {
            bulk::status(ctx, kind, id)
        }
        ["bulk", "v1", kind @ ("leads" | "activities"), "export", id, "file.json"] if get => bulk::file(ctx, kind, id),
        _ => {
            if known_path(&segs) {
                bad_method()
            } else {
                Reply::err("610", "Requested resource not found")
            }
        }
    }
}

fn known_path(segs: &[&str]) -> bool {
    matches!(
        segs,
        ["rest", "v1", "leads.json" | "activities.json"]
            | ["rest", "v1", "lead", _]
            | [
                "rest",
                "v1",
                "leads",
                "describe.json"
                    | "describe2.json"
                    | "delete.json"
                    | "partitions.json"
                    | "push.json"
                    | "submitForm.json"
            ]
            | ["rest", "v1", "leads", "programs", ..]
            | ["rest", "v1", "program" | "programs", "members", "describe.json"]
            | ["bulk", "v1", "leads.json"]
            | ["bulk", "v1", "leads", "batch", ..]
            | ["rest", "v1", "leads", "schema", ..]
            | [
                "rest",
                "v1",
                "leads",
                _,
                "listMembership.json" | "programMembership.json" | "smartCampaignMembership.json" | "associate.json"
            ]
            | ["rest", "v1", "leads", _, "merge.json"]
            | ["rest", "v1", "activities", _]
            | ["rest", "v1", "activities", "external", "types.json" | "type.json"]
            | ["rest", "v1", "activities", "external", "type", ..]
            | ["rest", "v1", "stats", ..]
            | ["bulk", "v1", "leads" | "activities", "export.json"]
            | ["bulk", "v1", "leads" | "activities", "export", ..]
    )
}

/// `stats/usage.json`, `stats/usage/last7days.json`, `stats/errors.json`, `stats/errors/last7days.json`:
/// counted calls (usage) or error outcomes (errors) per US-Central day, the current call included.
fn stats(ctx: &Ctx<'_>, errors: bool, days: i64) -> Reply {
    let today = central_day(ctx.now);
    let log = ctx.shared.log();
    let mut out = Vec::new();
    for back in 0..days {
        let Some(day) = today.checked_sub_days(chrono::Days::new(back as u64)) else {
            break;
        };
        let date = day.and_hms_opt(0, 0, 0).map(|d| fmt_ts(d.and_utc())).unwrap_or_default();
        let calls = log.iter().filter(|c| central_day(c.clock_at) == day && !c.path.starts_with("/identity"));
        if errors {
            let mut by_code: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
            for c in calls {
                if let Some(code) = &c.outcome {
                    *by_code.entry(code.clone()).or_default() += 1;
                }
            }
            let total: u64 = by_code.values().sum();
            let list: Vec<Value> =
                by_code.into_iter().map(|(k, v)| serde_json::json!({"errorCode": k, "count": v})).collect();
            out.push(serde_json::json!({"date": date, "total": total, "errors": list}));
        } else {
            let total = calls.filter(|c| c.counted).count() + usize::from(back == 0);
            out.push(serde_json::json!({
                "date": date,
                "total": total,
                "users": [{"userId": ctx.shared.config.api_user, "count": total}],
            }));
        }
    }
    Reply::ok(out)
}
