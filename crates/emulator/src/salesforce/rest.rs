//! REST resources under `/services/data/vNN.N/`.

use std::collections::HashMap;

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::{Map, Value, json};

use super::context::{Req, Shared};
use super::envelope::Reply;
use super::errors::SalesforceApiError as E;
use super::schema::{FType, ObjDef};
use super::soql::{self, Env};
use super::state::{Cursor, State};
use super::store::{Id18, Rec, WriteCtx, fmt_dt, id_str, id18, parse_dt};
use crate::sfid;

const MAX_COLLECTION: usize = 200;

fn method_not_allowed(method: &str, allowed: &str) -> Reply {
    Reply::err(E::method_not_allowed(method, allowed))
}

/// The request body as JSON (JSON_PARSER_ERROR when empty or malformed).
pub(crate) fn body_json(r: &Req<'_>) -> Result<Value, E> {
    if r.body.is_empty() {
        return Err(E::json_parser("No content to map due to end-of-input at [line:1, column:0]"));
    }
    serde_json::from_slice(r.body)
        .map_err(|e| E::json_parser(format!("Unexpected character: {e} at [line:{}, column:{}]", e.line(), e.column())))
}

fn body_object(r: &Req<'_>) -> Result<Map<String, Value>, E> {
    match body_json(r)? {
        Value::Object(m) => Ok(m),
        _ => Err(E::json_parser("Cannot deserialize instance of SObject out of START_ARRAY token")),
    }
}

fn obj<'s>(sh: &'s Shared, name: &str) -> Result<&'s ObjDef, E> {
    sh.schema.obj(name).ok_or_else(E::not_found)
}

/// The 415 answer for a request body that is not JSON. Only Bulk API 2.0 ingest uploads (CSV)
/// take another type; a body without a `Content-Type` is read as JSON.
pub(crate) fn unsupported_media_type(r: &Req<'_>, segs: &[&str]) -> Option<Reply> {
    if r.body.is_empty() || !matches!(r.method, "POST" | "PATCH" | "PUT") {
        return None;
    }
    if matches!(segs, ["jobs", "ingest", _, "batches"]) {
        return None;
    }
    let ct = r.headers.get("content-type").map(|v| v.to_str().unwrap_or("?"))?;
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        return None;
    }
    Some(Reply::err(E::new(
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        format!("Content type '{ct}' is not supported for this resource; send application/json"),
    )))
}

/// Routes one authenticated, counted request for a REST resource (records, queries, describes,
/// limits, sObject collections); composite subrequests come here too.
pub(crate) fn dispatch(sh: &Shared, st: &mut State, r: &Req<'_>) -> Reply {
    let segs: Vec<&str> = r.segs.iter().map(String::as_str).collect();
    let m = r.method;
    if let Some(reply) = unsupported_media_type(r, &segs) {
        return reply;
    }
    let res = match segs.as_slice() {
        [] => match m {
            "GET" => Ok(resources(r)),
            _ => return method_not_allowed(m, "GET,HEAD"),
        },
        ["limits"] => match m {
            "GET" => Ok(limits(sh, st, r)),
            _ => return method_not_allowed(m, "GET,HEAD"),
        },
        [q @ ("query" | "queryAll")] => match m {
            "GET" => query(sh, st, r, *q == "queryAll"),
            _ => return method_not_allowed(m, "GET,HEAD"),
        },
        ["query" | "queryAll", loc] => match m {
            "GET" => more(sh, st, r, loc),
            _ => return method_not_allowed(m, "GET,HEAD"),
        },
        ["sobjects"] => match m {
            "GET" => Ok(describe_global(sh, r)),
            _ => return method_not_allowed(m, "GET,HEAD"),
        },
        ["sobjects", t] => match m {
            "GET" => {
                obj(sh, t).map(|o| Reply::json(200, json!({"objectDescribe": basic_describe(o, r), "recentItems": []})))
            }
            "POST" => create(sh, st, r, t),
            _ => return method_not_allowed(m, "GET,HEAD,POST"),
        },
        ["sobjects", t, "describe"] => match m {
            "GET" => obj(sh, t).map(|o| Reply::json(200, describe(sh, o, r))),
            _ => return method_not_allowed(m, "GET,HEAD"),
        },
        ["sobjects", t, kind @ ("updated" | "deleted")] => match m {
            "GET" => replication(sh, st, r, t, *kind == "deleted"),
            _ => return method_not_allowed(m, "GET,HEAD"),
        },
        ["sobjects", t, id] => match m {
            "GET" => get_record(sh, st, r, t, id),
            "PATCH" => write(sh, st, r, |org, cx| {
                let input = body_object(r)?;
                org.update(cx, t, id, &input).map(|_| Reply::empty(204))
            }),
            "DELETE" => write(sh, st, r, |org, cx| org.delete(cx, t, id).map(|_| Reply::empty(204))),
            _ => return method_not_allowed(m, "GET,HEAD,PATCH,DELETE"),
        },
        ["sobjects", t, field, value] => match m {
            "GET" => get_by_ext(sh, st, r, t, field, value),
            "PATCH" => upsert_one(sh, st, r, t, field, value),
            _ => return method_not_allowed(m, "GET,HEAD,PATCH"),
        },
        // `POST composite`, `composite/batch` and `composite/tree` are routed by the server.
        ["composite"] => match m {
            "GET" => Ok(composite_resources(r)),
            _ => return method_not_allowed(m, "GET,HEAD,POST"),
        },
        ["composite", "sobjects"] => match m {
            "POST" => collection_write(sh, st, r, false),
            "PATCH" => collection_write(sh, st, r, true),
            "DELETE" => collection_delete(sh, st, r),
            _ => return method_not_allowed(m, "POST,PATCH,DELETE"),
        },
        ["composite", "sobjects", t] => match m {
            "GET" => collection_retrieve(sh, st, r, t),
            _ => return method_not_allowed(m, "GET,POST"),
        },
        ["composite", "sobjects", t, field] => match m {
            "PATCH" => collection_upsert(sh, st, r, t, field),
            _ => return method_not_allowed(m, "PATCH"),
        },
        _ => Err(E::not_found()),
    };
    res.unwrap_or_else(Reply::err)
}

fn write(
    sh: &Shared,
    st: &mut State,
    r: &Req<'_>,
    f: impl FnOnce(&mut super::store::Org, &WriteCtx<'_>) -> Result<Reply, E>,
) -> Result<Reply, E> {
    let cx = WriteCtx { schema: &sh.schema, now: r.now, user: &sh.user_id };
    f(&mut st.org, &cx)
}

fn resources(r: &Req<'_>) -> Reply {
    let v = &r.version;
    let mut m = Map::new();
    for k in ["sobjects", "query", "queryAll", "limits", "composite"] {
        m.insert(k.into(), Value::String(format!("/services/data/{v}/{k}")));
    }
    Reply::json(200, Value::Object(m))
}

fn composite_resources(r: &Req<'_>) -> Reply {
    let v = &r.version;
    let mut m = Map::new();
    for k in ["batch", "tree", "sobjects"] {
        m.insert(k.into(), Value::String(format!("/services/data/{v}/composite/{k}")));
    }
    Reply::json(200, Value::Object(m))
}

fn limits(sh: &Shared, st: &mut State, r: &Req<'_>) -> Reply {
    let max = sh.daily_api_limit();
    let used = st.used(r.now);
    let fixed = |max: u64| json!({"Max": max, "Remaining": max});
    let bulk_jobs = st.query_jobs_today(r.now);
    Reply::json(
        200,
        json!({
            "DailyApiRequests": {"Max": max, "Remaining": max.saturating_sub(used)},
            "DailyAsyncApexExecutions": fixed(250_000),
            "DailyBulkApiBatches": fixed(15_000),
            "DailyBulkV2QueryJobs": {"Max": 10_000, "Remaining": 10_000u64.saturating_sub(bulk_jobs)},
            "DailyBulkV2QueryFileStorageMB": fixed(1_000_000),
            "DataStorageMB": fixed(1_024),
            "FileStorageMB": fixed(1_024),
            "SingleEmail": fixed(5_000),
            "MassEmail": fixed(5_000),
            "ConcurrentAsyncGetReportInstances": fixed(200),
        }),
    )
}

fn batch_size(r: &Req<'_>) -> usize {
    let Some(h) = r.headers.get("sforce-query-options").and_then(|v| v.to_str().ok()) else { return 2000 };
    h.split([',', ';'])
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("batchSize"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .map_or(2000, |n| n.clamp(200, 2000))
}

fn next_url(r: &Req<'_>, cursor: &str, end: usize) -> Value {
    Value::String(format!("/services/data/{}/query/{cursor}-{end}", r.version))
}

fn query(sh: &Shared, st: &mut State, r: &Req<'_>, all: bool) -> Result<Reply, E> {
    let now = r.now;
    st.cursors.retain(|_, c| c.last_used + Duration::minutes(15) > now);
    let q = r
        .query
        .get("q")
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| E::malformed_query("A query string must be provided with the q parameter"))?;
    let parsed = soql::parse(&sh.schema, q, now)?;
    let env = Env {
        org: &st.org,
        schema: &sh.schema,
        version: &r.version,
        all_rows: all,
        purge_before: now - Duration::days(15),
    };
    if soql::is_grouped(&parsed) {
        // Aggregate results come in one batch, never with a cursor.
        let (records, total) = soql::run(&env, &parsed);
        if total > soql::MAX_AGGREGATE_ROWS {
            return Err(soql::too_many_groups());
        }
        return Ok(Reply::json(200, json!({"totalSize": total, "done": true, "records": records})));
    }
    let rows = soql::select(&env, &parsed);
    let total = rows.len();
    if parsed.is_count() {
        return Ok(Reply::json(200, json!({"totalSize": total, "done": true, "records": []})));
    }
    let batch = batch_size(r);
    let end = batch.min(total);
    let records = soql::render_rows(&env, &parsed, rows.get(..end).unwrap_or_default());
    let mut body = json!({"totalSize": total, "done": end >= total, "records": records});
    if end < total {
        // The result ids are materialized once; each further page renders only its own rows.
        let ids: Vec<Id18> =
            rows.iter().filter_map(|rec| rec.fields.get("Id").and_then(Value::as_str).and_then(id18)).collect();
        st.cursor_seq += 1;
        let id = sfid::mint("01g", st.cursor_seq);
        if let Value::Object(m) = &mut body {
            m.insert("nextRecordsUrl".into(), next_url(r, &id, end));
        }
        st.cursors.insert(id, Cursor { query: parsed, ids, all_rows: all, batch, last_used: now });
    }
    Ok(Reply::json(200, body))
}

fn more(sh: &Shared, st: &mut State, r: &Req<'_>, loc: &str) -> Result<Reply, E> {
    let bad = || E::bad("INVALID_QUERY_LOCATOR", "invalid query locator");
    let (id, off) = loc.rsplit_once('-').ok_or_else(bad)?;
    let off: usize = off.parse().map_err(|_| bad())?;
    let now = r.now;
    let c = st.cursors.get_mut(id).filter(|c| c.last_used + Duration::minutes(15) > now).ok_or_else(bad)?;
    if off > c.ids.len() {
        return Err(bad());
    }
    c.last_used = now;
    let total = c.ids.len();
    let end = (off + c.batch).min(total);
    let env = Env {
        org: &st.org,
        schema: &sh.schema,
        version: &r.version,
        all_rows: c.all_rows,
        purge_before: now - Duration::days(15),
    };
    let recs = st.org.by_id(soql::from(&c.query));
    let rows: Vec<&Rec> =
        c.ids.get(off..end).unwrap_or_default().iter().filter_map(|i| recs.and_then(|m| m.get(id_str(i)))).collect();
    let records = soql::render_rows(&env, &c.query, &rows);
    let mut body = json!({"totalSize": total, "done": end >= total, "records": records});
    if end < total
        && let Value::Object(m) = &mut body
    {
        m.insert("nextRecordsUrl".into(), next_url(r, id, end));
    }
    Ok(Reply::json(200, body))
}

fn render_record(o: &ObjDef, fields: &Map<String, Value>, version: &str, only: Option<&[String]>) -> Value {
    let id = fields.get("Id").and_then(Value::as_str).unwrap_or("");
    let mut m = Map::new();
    m.insert("attributes".into(), soql::attributes(version, o.name, id));
    for f in &o.fields {
        if only.is_some_and(|names| !names.iter().any(|n| n == &f.name)) {
            continue;
        }
        m.insert(f.name.clone(), fields.get(&f.name).cloned().unwrap_or(Value::Null));
    }
    Value::Object(m)
}

fn field_list(o: &ObjDef, r: &Req<'_>) -> Result<Option<Vec<String>>, E> {
    let Some(list) = r.query.get("fields").filter(|s| !s.trim().is_empty()) else { return Ok(None) };
    let mut out = Vec::new();
    for f in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let fd = o
            .field(f)
            .ok_or_else(|| E::invalid_field(format!("No such column '{f}' on sobject of type {}", o.name)))?;
        out.push(fd.name.clone());
    }
    Ok(Some(out))
}

fn get_record(sh: &Shared, st: &State, r: &Req<'_>, t: &str, id: &str) -> Result<Reply, E> {
    let o = obj(sh, t)?;
    let only = field_list(o, r)?;
    let rec = sfid::to18(id)
        .filter(|i| i.starts_with(o.prefix))
        .and_then(|i| st.org.get(o.name, &i))
        .ok_or_else(E::not_found)?;
    if rec.deleted_at.is_some() {
        return Err(E::entity_deleted());
    }
    Ok(Reply::json(200, render_record(o, &rec.fields, &r.version, only.as_deref())))
}

fn create(sh: &Shared, st: &mut State, r: &Req<'_>, t: &str) -> Result<Reply, E> {
    obj(sh, t)?;
    let input = body_object(r)?;
    write(sh, st, r, |org, cx| {
        let id = org.create(cx, t, &input, None)?;
        Ok(Reply::json(201, json!({"id": id, "success": true, "errors": []})))
    })
}

fn ext_field<'o>(o: &'o ObjDef, field: &str) -> Result<&'o str, E> {
    match o.field(field) {
        Some(f) if f.external_id || f.name == "Id" => Ok(&f.name),
        _ => Err(E::new(
            404,
            "NOT_FOUND",
            format!("Provided external ID field does not exist or is not accessible: {field}"),
        )),
    }
}

fn matches(st: &State, o: &ObjDef, field: &str, value: &str) -> Vec<String> {
    if field == "Id" {
        return sfid::to18(value)
            .and_then(|id| st.org.get(o.name, &id))
            .filter(|r| r.deleted_at.is_none())
            .and_then(|r| r.fields.get("Id").and_then(Value::as_str).map(|s| vec![s.to_string()]))
            .unwrap_or_default();
    }
    st.org.find_by(o.name, field, value)
}

fn multiple(o: &ObjDef, r: &Req<'_>, ids: &[String]) -> Reply {
    let urls: Vec<String> =
        ids.iter().map(|id| format!("/services/data/{}/sobjects/{}/{id}", r.version, o.name)).collect();
    Reply::json(300, json!(urls))
}

fn get_by_ext(sh: &Shared, st: &State, r: &Req<'_>, t: &str, field: &str, value: &str) -> Result<Reply, E> {
    let o = obj(sh, t)?;
    let f = ext_field(o, field)?;
    let only = field_list(o, r)?;
    let ids = matches(st, o, f, value);
    match ids.as_slice() {
        [] => Err(E::not_found()),
        [id] => {
            let rec = st.org.get(o.name, id).ok_or_else(E::not_found)?;
            Ok(Reply::json(200, render_record(o, &rec.fields, &r.version, only.as_deref())))
        }
        _ => Ok(multiple(o, r, &ids)),
    }
}

fn upsert_one(sh: &Shared, st: &mut State, r: &Req<'_>, t: &str, field: &str, value: &str) -> Result<Reply, E> {
    let o = obj(sh, t)?;
    let f = ext_field(o, field)?.to_string();
    let mut input = body_object(r)?;
    input.retain(|k, _| !k.eq_ignore_ascii_case(&f));
    let ids = matches(st, o, &f, value);
    match ids.as_slice() {
        [] => {
            if f == "Id" {
                return Err(E::not_found());
            }
            input.insert(f.clone(), Value::String(value.to_string()));
            write(sh, st, r, |org, cx| {
                let id = org.create(cx, o.name, &input, None)?;
                Ok(Reply::json(201, json!({"id": id, "success": true, "errors": [], "created": true})))
            })
        }
        [id] => {
            let id = id.clone();
            write(sh, st, r, |org, cx| org.update(cx, o.name, &id, &input).map(|_| Reply::empty(204)))
        }
        _ => Ok(multiple(o, r, &ids)),
    }
}

fn collection_body(r: &Req<'_>) -> Result<(bool, Vec<Value>), E> {
    let b = body_object(r)?;
    let all_or_none = b.get("allOrNone").and_then(Value::as_bool).unwrap_or(false);
    let records = match b.get("records") {
        Some(Value::Array(a)) => a.clone(),
        _ => return Err(E::bad("INVALID_FIELD", "The request body must include a records array")),
    };
    if records.len() > MAX_COLLECTION {
        return Err(E::bad(
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        ));
    }
    Ok((all_or_none, records))
}

fn record_type(rec: &Value) -> Option<String> {
    rec.get("attributes").and_then(|a| a.get("type")).and_then(Value::as_str).map(str::to_string)
}

fn rolled_back() -> Value {
    json!({"success": false, "errors": [{
        "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
        "fields": []
    }]})
}

/// Runs per-record writes under an optional all-or-none journal. Inside an all-or-none composite
/// request (a journal already open) the collection is all-or-none too, as Salesforce documents,
/// and its writes join the composite's journal.
fn run_collection<T>(
    sh: &Shared,
    st: &mut State,
    r: &Req<'_>,
    all_or_none: bool,
    items: &[T],
    mut one: impl FnMut(&mut super::store::Org, &WriteCtx<'_>, usize, &T) -> Result<Value, E>,
    fail: impl Fn(&E) -> Value,
) -> Reply {
    let cx = WriteCtx { schema: &sh.schema, now: r.now, user: &sh.user_id };
    let outer = st.org.journal.take();
    let all_or_none = all_or_none || outer.is_some();
    if all_or_none {
        st.org.journal = Some(Vec::new());
    }
    let mut results: Vec<Result<Value, Value>> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        results.push(one(&mut st.org, &cx, i, item).map_err(|e| fail(&e)));
    }
    let undo = all_or_none && results.iter().any(Result::is_err);
    st.org.end_journal(outer, undo);
    let out: Vec<Value> = if undo {
        results.into_iter().map(|x| x.err().unwrap_or_else(rolled_back)).collect()
    } else {
        results.into_iter().map(|x| x.unwrap_or_else(|e| e)).collect()
    };
    Reply::json(200, Value::Array(out))
}

fn failure(e: &E) -> Value {
    json!({"success": false, "errors": [e.record_json()]})
}

fn collection_write(sh: &Shared, st: &mut State, r: &Req<'_>, update: bool) -> Result<Reply, E> {
    let (all_or_none, records) = collection_body(r)?;
    if records.iter().any(|x| record_type(x).is_none()) {
        return Err(E::bad("INVALID_INPUT", "Each record in the collection must have a type specified in attributes"));
    }
    if let Some(bad) = records.iter().filter_map(record_type).find(|t| sh.schema.obj(t).is_none()) {
        return Err(E::bad("INVALID_TYPE", format!("sObject type '{bad}' is not supported.")));
    }
    Ok(run_collection(
        sh,
        st,
        r,
        all_or_none,
        &records,
        |org, cx, _, rec| {
            let t = record_type(rec).unwrap_or_default();
            let Some(input) = rec.as_object() else {
                return Err(E::json_parser("record must be an object"));
            };
            if update {
                let id = input
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("id"))
                    .and_then(|(_, v)| v.as_str())
                    .ok_or_else(|| {
                        E::bad("MISSING_ARGUMENT", "Id not specified in an update call").with_fields(["Id"])
                    })?
                    .to_string();
                org.update(cx, &t, &id, input).map_err(|e| {
                    if e.error_code == "NOT_FOUND" {
                        E::bad("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
                    } else {
                        e
                    }
                })?;
                let id18 = sfid::to18(&id).unwrap_or(id);
                Ok(json!({"id": id18, "success": true, "errors": []}))
            } else {
                let id = org.create(cx, &t, input, None)?;
                Ok(json!({"id": id, "success": true, "errors": []}))
            }
        },
        failure,
    ))
}

fn collection_delete(sh: &Shared, st: &mut State, r: &Req<'_>) -> Result<Reply, E> {
    let ids: Vec<String> = r
        .query
        .get("ids")
        .map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    if ids.is_empty() {
        return Err(E::bad("MISSING_ARGUMENT", "ids parameter is required"));
    }
    if ids.len() > MAX_COLLECTION {
        return Err(E::bad(
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        ));
    }
    let all_or_none = r.query.get("allOrNone").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    Ok(run_collection(
        sh,
        st,
        r,
        all_or_none,
        &ids,
        |org, cx, _, id| {
            let ty = cx
                .schema
                .by_prefix(id)
                .map(|o| o.name)
                .ok_or_else(|| E::bad("MALFORMED_ID", format!("malformed id {id}")))?;
            org.delete(cx, ty, id).map_err(|e| {
                if e.error_code == "NOT_FOUND" {
                    E::bad("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
                } else {
                    E { status: 400, ..e }
                }
            })?;
            Ok(json!({"id": sfid::to18(id).unwrap_or_else(|| id.clone()), "success": true, "errors": []}))
        },
        |e| json!({"id": ids_placeholder(), "success": false, "errors": [e.record_json()]}),
    ))
}

fn ids_placeholder() -> Value {
    Value::Null
}

fn collection_upsert(sh: &Shared, st: &mut State, r: &Req<'_>, t: &str, field: &str) -> Result<Reply, E> {
    let o = obj(sh, t)?;
    let f = ext_field(o, field)?.to_string();
    let (all_or_none, records) = collection_body(r)?;
    let values: Vec<Option<String>> = records
        .iter()
        .map(|rec| {
            rec.as_object().and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(&f))).and_then(
                |(_, v)| match v {
                    Value::String(s) if !s.is_empty() => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                },
            )
        })
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for v in values.iter().flatten() {
        *counts.entry(v.to_lowercase()).or_default() += 1;
    }
    Ok(run_collection(
        sh,
        st,
        r,
        all_or_none,
        &records,
        |org, cx, i, rec| {
            let input = rec.as_object().ok_or_else(|| E::json_parser("record must be an object"))?;
            if record_type(rec).is_some_and(|rt| !rt.eq_ignore_ascii_case(o.name)) || record_type(rec).is_none() {
                return Err(E::bad("INVALID_TYPE", format!("Each record must be of type {}", o.name)));
            }
            let Some(value) = values[i].clone() else {
                return Err(E::bad("MISSING_ARGUMENT", format!("{f} not specified")).with_fields([f.clone()]));
            };
            if counts.get(&value.to_lowercase()).copied().unwrap_or(0) > 1 {
                return Err(E::bad("DUPLICATE_EXTERNAL_ID", format!("Duplicate external id specified: {value}"))
                    .with_fields([f.clone()]));
            }
            let existing = if f == "Id" {
                sfid::to18(&value)
                    .and_then(|id| org.get(o.name, &id))
                    .filter(|r| r.deleted_at.is_none())
                    .map(|_| vec![value.clone()])
                    .unwrap_or_default()
            } else {
                org.find_by(o.name, &f, &value)
            };
            match existing.as_slice() {
                [] => {
                    let id = org.create(cx, o.name, input, None)?;
                    Ok(json!({"id": id, "success": true, "errors": [], "created": true}))
                }
                [id] => {
                    let id = id.clone();
                    org.update(cx, o.name, &id, input)?;
                    Ok(json!({"id": id, "success": true, "errors": [], "created": false}))
                }
                many => Err(E::bad(
                    "DUPLICATE_EXTERNAL_ID",
                    format!("{f}: more than one record found for external id field: [{}]", many.join(", ")),
                )
                .with_fields([f.clone()])),
            }
        },
        |e| json!({"success": false, "errors": [e.record_json()], "created": false}),
    ))
}

fn repl_date(r: &Req<'_>, k: &str) -> Result<DateTime<Utc>, E> {
    let s = r
        .query
        .get(k)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| E::bad("MISSING_ARGUMENT", format!("{k} not specified")))?;
    let t = parse_dt(s).ok_or_else(|| E::bad("INVALID_REPLICATION_DATE", format!("{k}: unparseable date {s}")))?;
    Ok(t.duration_trunc(Duration::minutes(1)).unwrap_or(t))
}

fn replication(sh: &Shared, st: &State, r: &Req<'_>, t: &str, deleted: bool) -> Result<Reply, E> {
    let o = obj(sh, t)?;
    let start = repl_date(r, "start")?;
    let end = repl_date(r, "end")?;
    let now = r.now.duration_trunc(Duration::minutes(1)).unwrap_or(r.now);
    if start >= end {
        return Err(E::bad("INVALID_REPLICATION_DATE", "startDate must chronologically precede endDate"));
    }
    if start < now - Duration::days(30) {
        return Err(E::bad("INVALID_REPLICATION_DATE", "startDate cannot be more than 30 days ago"));
    }
    let latest = end.min(now);
    let ms = |rec: &super::store::Rec| rec.fields.get("SystemModstamp").and_then(Value::as_str).and_then(parse_dt);
    if deleted {
        let earliest = (r.now - Duration::days(15)).duration_trunc(Duration::minutes(1)).unwrap_or(r.now);
        let mut rows: Vec<(DateTime<Utc>, String)> = st
            .org
            .all(o.name)
            .filter_map(|rec| {
                let d = rec.deleted_at?;
                (d >= start && d < latest && d >= earliest)
                    .then(|| (d, rec.fields.get("Id").and_then(Value::as_str).unwrap_or("").to_string()))
            })
            .collect();
        rows.sort();
        if rows.len() > 600_000 {
            return Err(E::bad("EXCEEDED_ID_LIMIT", "too many ids"));
        }
        let list: Vec<Value> = rows.into_iter().map(|(d, id)| json!({"id": id, "deletedDate": fmt_dt(d)})).collect();
        return Ok(Reply::json(
            200,
            json!({"deletedRecords": list, "earliestDateAvailable": fmt_dt(earliest), "latestDateCovered": fmt_dt(latest)}),
        ));
    }
    let mut rows: Vec<(DateTime<Utc>, String)> = st
        .org
        .all(o.name)
        .filter(|rec| rec.deleted_at.is_none())
        .filter_map(|rec| {
            let m = ms(rec)?;
            (m >= start && m < latest)
                .then(|| (m, rec.fields.get("Id").and_then(Value::as_str).unwrap_or("").to_string()))
        })
        .collect();
    rows.sort();
    if rows.len() > 600_000 {
        return Err(E::bad("EXCEEDED_ID_LIMIT", "too many ids"));
    }
    let ids: Vec<String> = rows.into_iter().map(|(_, id)| id).collect();
    Ok(Reply::json(200, json!({"ids": ids, "latestDateCovered": fmt_dt(latest)})))
}

fn urls(o: &ObjDef, r: &Req<'_>) -> Value {
    let base = format!("/services/data/{}/sobjects/{}", r.version, o.name);
    json!({"sobject": base, "describe": format!("{base}/describe"), "rowTemplate": format!("{base}/{{ID}}")})
}

fn basic_describe(o: &ObjDef, r: &Req<'_>) -> Value {
    json!({
        "name": o.name, "label": o.name, "keyPrefix": o.prefix, "custom": false,
        "createable": true, "updateable": true, "deletable": o.deletable, "queryable": true,
        "replicateable": o.deletable, "urls": urls(o, r),
    })
}

fn describe_global(sh: &Shared, r: &Req<'_>) -> Reply {
    let list: Vec<Value> = sh.schema.objects.iter().map(|o| basic_describe(o, r)).collect();
    Reply::json(200, json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": list}))
}

fn describe(sh: &Shared, o: &ObjDef, r: &Req<'_>) -> Value {
    let _ = sh;
    let fields: Vec<Value> = o
        .fields
        .iter()
        .map(|f| {
            let (refs, len): (Vec<&str>, usize) = match &f.ty {
                FType::Ref(t) => (t.to_vec(), 18),
                FType::Id => (Vec::new(), 18),
                FType::Str(n) => (Vec::new(), *n),
                FType::Email => (Vec::new(), 80),
                FType::Pick(_) | FType::Any => (Vec::new(), 255),
                _ => (Vec::new(), 0),
            };
            let picks: Vec<Value> = match &f.ty {
                FType::Pick(v) => {
                    v.iter().map(|x| json!({"value": x, "label": x, "active": true, "defaultValue": false})).collect()
                }
                _ => Vec::new(),
            };
            json!({
                "name": f.name, "label": f.name, "type": f.ty.describe_name(), "length": len,
                "nillable": !f.required && f.ty != FType::Bool,
                "createable": f.access != super::schema::Access::ReadOnly,
                "updateable": f.access == super::schema::Access::Write,
                "externalId": f.external_id, "unique": f.unique, "custom": f.custom,
                "referenceTo": refs, "relationshipName": f.rel,
                "restrictedPicklist": matches!(f.ty, FType::Pick(_)), "picklistValues": picks,
                "groupable": soql::groupable(&f.ty),
            })
        })
        .collect();
    let children: Vec<Value> = o
        .children
        .iter()
        .map(|c| json!({"childSObject": c.child, "field": c.field, "relationshipName": c.name}))
        .collect();
    let mut d = basic_describe(o, r);
    if let Value::Object(m) = &mut d {
        m.insert("fields".into(), Value::Array(fields));
        m.insert("childRelationships".into(), Value::Array(children));
    }
    d
}

fn collection_retrieve(sh: &Shared, st: &State, r: &Req<'_>, t: &str) -> Result<Reply, E> {
    let o = obj(sh, t)?;
    let ids: Vec<&str> =
        r.query.get("ids").map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()).unwrap_or_default();
    if ids.is_empty() {
        return Err(E::bad("MISSING_ARGUMENT", "ids parameter is required"));
    }
    if ids.len() > 2000 {
        return Err(E::bad("EXCEEDED_ID_LIMIT", "record limit reached. cannot retrieve more than 2000 records"));
    }
    let only = field_list(o, r)?.ok_or_else(|| E::bad("MISSING_ARGUMENT", "fields parameter is required"))?;
    let out: Vec<Value> = ids
        .iter()
        .map(|id| {
            sfid::to18(id)
                .filter(|i| i.starts_with(o.prefix))
                .and_then(|i| st.org.get(o.name, &i))
                .filter(|rec| rec.deleted_at.is_none())
                .map_or(Value::Null, |rec| render_record(o, &rec.fields, &r.version, Some(&only)))
        })
        .collect();
    Ok(Reply::json(200, Value::Array(out)))
}
