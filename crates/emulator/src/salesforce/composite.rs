//! The composite resources under `/services/data/vNN.N/composite`: `composite` (a series of
//! subrequests with references between them, optionally all-or-none), `composite/batch`
//! (independent subrequests) and `composite/tree/{SObject}` (a record tree created in one
//! transaction). Subrequests go through the same dispatch as ordinary requests.

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use super::context::{Req, Shared, is_version};
use super::envelope::Reply;
use super::errors::SalesforceApiError as E;
use super::rest;
use super::state::State;
use super::store::WriteCtx;

/// Most subrequests of one `composite` or `composite/batch` request.
const MAX_SUBREQUESTS: usize = 25;
/// Most records of one `composite/tree` request.
const MAX_TREE_RECORDS: usize = 200;

fn limit_exceeded() -> E {
    E::bad("LIMIT_EXCEEDED", "The request can\u{2019}t contain more than 25 operations.")
}

fn halted() -> E {
    E::bad(
        "PROCESSING_HALTED",
        "The transaction was rolled back since another operation in the same transaction failed.",
    )
}

fn body_object(r: &Req<'_>) -> Result<Map<String, Value>, E> {
    match rest::body_json(r)? {
        Value::Object(m) => Ok(m),
        _ => Err(E::json_parser("Cannot deserialize instance of the request out of START_ARRAY token")),
    }
}

/// A reply as a subrequest result body: its JSON, its text, or `null`.
fn reply_body(reply: &Reply) -> Value {
    match (&reply.body, &reply.text) {
        (Some(b), _) => b.clone(),
        (None, Some((_, t))) => Value::String(t.clone()),
        (None, None) => Value::Null,
    }
}

/// Runs one subrequest given as a `/services/data/vNN.N/…` URL or in the batch form `vNN.N/…`.
/// Nested composite requests and Bulk API jobs are refused.
fn sub_request(
    sh: &Shared,
    st: &mut State,
    r: &Req<'_>,
    method: &str,
    url: &str,
    body: Option<&Value>,
    headers: &HeaderMap,
) -> Reply {
    let (path, qs) = url.split_once('?').unwrap_or((url, ""));
    let segs: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect();
    let rest_segs = match segs.as_slice() {
        [s, d, v, rest @ ..] if s == "services" && d == "data" && is_version(v) => Some((v.clone(), rest.to_vec())),
        [v, rest @ ..] if is_version(v) => Some((v.clone(), rest.to_vec())),
        _ => None,
    };
    let Some((version, rest_segs)) = rest_segs else {
        return Reply::err(E::not_found());
    };
    let nested = matches!(rest_segs.first().map(String::as_str), Some("jobs"))
        || (rest_segs.first().map(String::as_str) == Some("composite")
            && !matches!(rest_segs.get(1).map(String::as_str), Some("sobjects")));
    if nested {
        return Reply::err(E::bad("INVALID_INPUT", format!("{path} is not supported as a subrequest")));
    }
    let query: HashMap<String, String> = url::form_urlencoded::parse(qs.as_bytes()).into_owned().collect();
    let bytes = body.filter(|b| !b.is_null()).map(|b| serde_json::to_vec(b).unwrap_or_default()).unwrap_or_default();
    let sub = Req { method, version, segs: rest_segs, query, headers, body: &bytes, now: r.now };
    rest::dispatch(sh, st, &sub)
}

/// The request headers of a subrequest: its `httpHeaders`, with JSON as the content type.
fn sub_headers(h: Option<&Value>) -> HeaderMap {
    let mut out = HeaderMap::new();
    out.insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(Value::Object(m)) = h {
        for (k, v) in m {
            if let (Ok(name), Some(Ok(val))) =
                (HeaderName::from_bytes(k.as_bytes()), v.as_str().map(HeaderValue::from_str))
            {
                out.insert(name, val);
            }
        }
    }
    out
}

/// A value reached by a reference path (`id`, `records[0].Id`, `Owner.Name`) inside a result.
fn lookup<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    let mut at = root;
    for part in path.split('.') {
        let (name, mut idx) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            at = match at {
                Value::Object(m) => {
                    m.get(name).or_else(|| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))?
                }
                _ => return None,
            };
        }
        while let Some(rest) = idx.strip_prefix('[') {
            let (n, tail) = rest.split_once(']')?;
            at = at.get(n.trim().parse::<usize>().ok()?)?;
            idx = tail;
        }
    }
    Some(at)
}

/// Replaces every `@{refId.path}` in a string with the referenced value; the error names the
/// reference that has no value.
fn resolve_str(s: &str, done: &HashMap<String, Value>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("@{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            return Ok(out);
        };
        let expr = &after[..end];
        let (id, path) = expr.split_once('.').unwrap_or((expr, ""));
        let v = done.get(id).and_then(|b| if path.is_empty() { Some(b) } else { lookup(b, path) });
        match v {
            Some(Value::String(x)) => out.push_str(x),
            Some(Value::Null) | None => return Err(expr.to_string()),
            Some(other) => out.push_str(&other.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// [`resolve_str`] over every string (keys included) of a JSON body.
fn resolve_value(v: &Value, done: &HashMap<String, Value>) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(resolve_str(s, done)?),
        Value::Array(a) => Value::Array(a.iter().map(|x| resolve_value(x, done)).collect::<Result<_, _>>()?),
        Value::Object(m) => {
            let mut o = Map::new();
            for (k, x) in m {
                o.insert(resolve_str(k, done)?, resolve_value(x, done)?);
            }
            Value::Object(o)
        }
        other => other.clone(),
    })
}

fn bad_reference(expr: &str) -> E {
    let id = expr.split('.').next().unwrap_or(expr);
    E::bad(
        "PROCESSING_HALTED",
        format!(
            "Invalid reference specified. No value for {expr} found in {id}. Provided referenceId ('{id}') must be a referenceId of an earlier subrequest and the field name must be correct."
        ),
    )
}

/// A composite subrequest result.
fn entry(body: Value, headers: Value, status: u16, reference: Value) -> Value {
    json!({"body": body, "httpHeaders": headers, "httpStatusCode": status, "referenceId": reference})
}

/// A request-level refusal, answered like Salesforce: one result with a null `referenceId`.
fn refusal(e: &E) -> Reply {
    Reply::json(200, json!({"compositeResponse": [entry(json!([e.rest_json()]), json!({}), e.status, Value::Null)]}))
}

fn valid_reference_id(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The subrequest array under `key` of a composite or batch body (INVALID_INPUT when missing).
fn subrequests<'a>(b: &'a Map<String, Value>, key: &str) -> Result<&'a Vec<Value>, E> {
    match b.get(key) {
        Some(Value::Array(subs)) => Ok(subs),
        _ => Err(E::bad("INVALID_INPUT", format!("The request body must include a {key} array"))),
    }
}

/// `POST /composite`.
pub(crate) fn composite(sh: &Shared, st: &mut State, r: &Req<'_>) -> Result<Reply, E> {
    let b = body_object(r)?;
    let all_or_none = b.get("allOrNone").and_then(Value::as_bool).unwrap_or(false);
    let subs = subrequests(&b, "compositeRequest")?;
    if subs.len() > MAX_SUBREQUESTS {
        return Ok(refusal(&limit_exceeded()));
    }
    let mut seen: Vec<String> = Vec::new();
    for s in subs {
        let rid = s.get("referenceId").and_then(Value::as_str).unwrap_or("");
        let method = s.get("method").and_then(Value::as_str).unwrap_or("");
        let url = s.get("url").and_then(Value::as_str).unwrap_or("");
        if method.is_empty() || url.is_empty() || rid.is_empty() {
            return Ok(refusal(&E::bad("INVALID_INPUT", "Each subrequest needs a method, a url and a referenceId")));
        }
        if !valid_reference_id(rid) {
            return Ok(refusal(&E::bad(
                "INVALID_INPUT",
                format!(
                    "Invalid referenceId '{rid}': a referenceId must start with a letter and contain only letters, digits and underscores"
                ),
            )));
        }
        if seen.iter().any(|x| x.eq_ignore_ascii_case(rid)) {
            return Ok(refusal(&E::bad(
                "INVALID_INPUT",
                format!("Duplicate referenceId provided in the request: {rid}"),
            )));
        }
        seen.push(rid.to_string());
    }
    // One journal for the whole series, so an all-or-none failure undoes every write.
    let outer = st.org.journal.take();
    if all_or_none {
        st.org.journal = Some(Vec::new());
    }
    let mut done: HashMap<String, Value> = HashMap::new();
    let mut out: Vec<Value> = Vec::with_capacity(subs.len());
    let mut failed_at = None;
    for (i, s) in subs.iter().enumerate() {
        let rid = s.get("referenceId").and_then(Value::as_str).unwrap_or("").to_string();
        let method = s.get("method").and_then(Value::as_str).unwrap_or("").to_ascii_uppercase();
        let url = s.get("url").and_then(Value::as_str).unwrap_or("");
        let resolved = resolve_str(url, &done).and_then(|u| {
            let body = s.get("body").map(|b| resolve_value(b, &done)).transpose()?;
            Ok((u, body))
        });
        let (status, body, headers) = match resolved {
            Err(expr) => {
                let e = bad_reference(&expr);
                (e.status, json!([e.rest_json()]), json!({}))
            }
            Ok((u, body)) => {
                let reply = sub_request(sh, st, r, &method, &u, body.as_ref(), &sub_headers(s.get("httpHeaders")));
                let body = reply_body(&reply);
                let mut h = Map::new();
                if reply.status == 201
                    && let Some(id) = body.get("id").and_then(Value::as_str)
                {
                    let ty = u.split('/').filter(|x| !x.is_empty()).nth(4).unwrap_or("");
                    h.insert("Location".into(), json!(format!("/services/data/{}/sobjects/{ty}/{id}", version_of(&u))));
                }
                (reply.status, body, Value::Object(h))
            }
        };
        // Under allOrNone a collection subrequest with a failed record fails the series too.
        let failed = status >= 400
            || (all_or_none
                && body.as_array().is_some_and(|a| a.iter().any(|x| x.get("success") == Some(&Value::Bool(false)))));
        if !failed {
            done.insert(rid.clone(), body.clone());
        }
        out.push(entry(body, headers, status, Value::String(rid)));
        if failed && all_or_none {
            failed_at = Some(i);
            break;
        }
    }
    st.org.end_journal(outer, failed_at.is_some());
    if let Some(k) = failed_at {
        let e = halted();
        let mut all = Vec::with_capacity(subs.len());
        for (i, s) in subs.iter().enumerate() {
            let rid = s.get("referenceId").cloned().unwrap_or(Value::Null);
            match out.get(i) {
                Some(x) if i == k => all.push(x.clone()),
                _ => all.push(entry(json!([e.rest_json()]), json!({}), e.status, rid)),
            }
        }
        out = all;
    }
    Ok(Reply::json(200, json!({"compositeResponse": out})))
}

fn version_of(url: &str) -> &str {
    url.split('/').filter(|x| !x.is_empty()).nth(2).unwrap_or("")
}

/// `POST /composite/batch`. Every subrequest counts as one API call (the batch itself is counted
/// as the first of them).
pub(crate) fn batch(sh: &Shared, st: &mut State, r: &Req<'_>) -> Result<Reply, E> {
    let b = body_object(r)?;
    let halt = b.get("haltOnError").and_then(Value::as_bool).unwrap_or(false);
    let subs = subrequests(&b, "batchRequests")?;
    if subs.len() > MAX_SUBREQUESTS {
        return Err(limit_exceeded());
    }
    if subs.len() > 1 {
        st.count_calls(r.now, subs.len() - 1);
    }
    let mut has_errors = false;
    let mut results = Vec::with_capacity(subs.len());
    for s in subs {
        if halt && has_errors {
            results.push(json!({"statusCode": 412, "result": [{
                "errorCode": "BATCH_PROCESSING_HALTED",
                "message": "Batch processing halted per request"
            }]}));
            continue;
        }
        let method = s.get("method").and_then(Value::as_str).unwrap_or("").to_ascii_uppercase();
        let url = s.get("url").and_then(Value::as_str).unwrap_or("");
        let reply = if method.is_empty() || url.is_empty() {
            Reply::err(E::bad("INVALID_INPUT", "Each batch subrequest needs a method and a url"))
        } else {
            sub_request(sh, st, r, &method, url, s.get("richInput"), &sub_headers(None))
        };
        has_errors |= reply.status >= 400;
        results.push(json!({"statusCode": reply.status, "result": reply_body(&reply)}));
    }
    Ok(Reply::json(200, json!({"hasErrors": has_errors, "results": results})))
}

/// One record of a tree, flattened: its type, reference id, own fields and parent (index of the
/// parent record and the child's reference field).
struct TreeRec {
    ty: String,
    reference: String,
    fields: Map<String, Value>,
    parent: Option<(usize, &'static str)>,
}

fn flatten(
    sh: &Shared,
    records: &[Value],
    want: Option<&str>,
    parent: Option<(usize, &'static str)>,
    out: &mut Vec<TreeRec>,
) -> Result<(), E> {
    for rec in records {
        let m = rec.as_object().ok_or_else(|| E::json_parser("Each record must be a JSON object"))?;
        let attrs = m.get("attributes");
        let ty = attrs.and_then(|a| a.get("type")).and_then(Value::as_str).unwrap_or("");
        let reference = attrs.and_then(|a| a.get("referenceId")).and_then(Value::as_str).unwrap_or("");
        if reference.is_empty() {
            return Err(E::bad("INVALID_INPUT", "Each record needs attributes.referenceId"));
        }
        let obj = sh
            .schema
            .obj(ty)
            .filter(|o| want.is_none_or(|w| o.name.eq_ignore_ascii_case(w)))
            .ok_or_else(|| E::bad("INVALID_TYPE", format!("sObject type '{ty}' is not supported here")))?;
        if out.iter().any(|x| x.reference.eq_ignore_ascii_case(reference)) {
            return Err(E::bad("INVALID_INPUT", format!("Duplicate ReferenceId provided in the request: {reference}")));
        }
        let idx = out.len();
        let mut fields = Map::new();
        let mut kids = Vec::new();
        for (k, v) in m {
            if k == "attributes" {
                continue;
            }
            match (obj.child(k), v) {
                (Some(cr), Value::Object(sub)) => {
                    let list = sub.get("records").and_then(Value::as_array).cloned().unwrap_or_default();
                    kids.push((cr.child, cr.field, list));
                }
                _ => {
                    fields.insert(k.clone(), v.clone());
                }
            }
        }
        out.push(TreeRec { ty: obj.name.to_string(), reference: reference.to_string(), fields, parent });
        for (child, field, list) in kids {
            flatten(sh, &list, Some(child), Some((idx, field)), out)?;
        }
        if out.len() > MAX_TREE_RECORDS {
            return Err(E::bad("LIMIT_EXCEEDED", "The request can\u{2019}t contain more than 200 records."));
        }
    }
    Ok(())
}

/// `POST /composite/tree/{SObject}`: creates the records and their nested children (through
/// child relationship names) in one transaction; any failure rolls all of them back (400).
pub(crate) fn tree(sh: &Shared, st: &mut State, r: &Req<'_>, t: &str) -> Result<Reply, E> {
    let root = sh.schema.obj(t).ok_or_else(E::not_found)?;
    let b = body_object(r)?;
    let records = b.get("records").and_then(Value::as_array).cloned().unwrap_or_default();
    if records.is_empty() {
        return Err(E::bad("INVALID_INPUT", "The request body must include a records array"));
    }
    let mut flat = Vec::new();
    flatten(sh, &records, Some(root.name), None, &mut flat)?;
    let outer = st.org.journal.take();
    st.org.journal = Some(Vec::new());
    let cx = WriteCtx { schema: &sh.schema, now: r.now, user: &sh.user_id };
    let mut ids: Vec<String> = Vec::with_capacity(flat.len());
    let mut errors = Vec::new();
    for rec in &flat {
        let mut fields = rec.fields.clone();
        if let Some((p, field)) = rec.parent {
            fields.insert(field.to_string(), json!(ids.get(p).cloned().unwrap_or_default()));
        }
        match st.org.create(&cx, &rec.ty, &fields, None) {
            Ok(id) => ids.push(id),
            Err(e) => {
                errors.push(json!({"referenceId": rec.reference, "errors": [e.record_json()]}));
                break;
            }
        }
    }
    st.org.end_journal(outer, !errors.is_empty());
    if !errors.is_empty() {
        return Ok(Reply::json(400, json!({"hasErrors": true, "results": errors})));
    }
    let results: Vec<Value> =
        flat.iter().zip(&ids).map(|(rec, id)| json!({"referenceId": rec.reference, "id": id})).collect();
    Ok(Reply::json(201, json!({"hasErrors": false, "results": results})))
}
