//! Bulk API 2.0 query jobs under `/services/data/vNN.N/jobs/query`.
//!
//! A job selects its rows when it is created (through the same planner and indexes as REST
//! `query`) and keeps only their ids; each results request renders its own slice as CSV. Every
//! request is an ordinary data call, counted against the daily API allocation.

use chrono::Duration;
use data_encoding::BASE64_NOPAD;
use serde_json::{Value, json};

use super::context::{Req, Shared};
use super::envelope::Reply;
use super::errors::SalesforceApiError as E;
use super::jobs::{BulkJob, JobHead, JobState, csv_dialect, invalid_state};
use super::soql::{self, Env};
use super::state::State;
use super::store::{Id18, Rec, id_str, id18};
use crate::sfid;

/// Default and largest `maxRecords` of one results request.
const MAX_RECORDS: usize = 50_000;
fn info(sh: &Shared, j: &BulkJob) -> Value {
    let mut o = j.head.info(&sh.user_id, j.state.name(), "V2Query");
    let done = j.state == JobState::JobComplete;
    o.insert("numberRecordsProcessed".into(), json!(if done { j.ids.len() } else { 0 }));
    o.insert("retries".into(), json!(0));
    o.insert("totalProcessingTime".into(), json!(0));
    Value::Object(o)
}

/// Routes `jobs/query…`; `None` when the path is not a query-job resource.
pub(crate) fn dispatch(sh: &Shared, st: &mut State, r: &Req<'_>, rest: &[&str]) -> Result<Reply, E> {
    st.prune_query_jobs(r.now);
    match (rest, r.method) {
        ([], "POST") => create(sh, st, r),
        ([], "GET") => {
            let records: Vec<Value> = st.bulk_jobs.values().map(|j| info(sh, j)).collect();
            Ok(Reply::json(200, json!({"done": true, "records": records, "nextRecordsUrl": null})))
        }
        ([], m) => Err(E::method_not_allowed(m, "GET,POST")),
        ([id], "GET") => status(sh, st, r, id),
        ([id], "PATCH") => abort(sh, st, r, id),
        ([id], "DELETE") => {
            let j = st.bulk_jobs.get(*id).ok_or_else(E::not_found)?;
            if j.state == JobState::InProgress {
                return Err(invalid_state("Deleting a job in progress is not allowed"));
            }
            st.bulk_jobs.remove(*id);
            Ok(Reply::empty(204))
        }
        ([_], m) => Err(E::method_not_allowed(m, "GET,PATCH,DELETE")),
        ([id, "results"], "GET") => results(sh, st, r, id),
        ([_, "results"], m) => Err(E::method_not_allowed(m, "GET")),
        _ => Err(E::not_found()),
    }
}

fn create(sh: &Shared, st: &mut State, r: &Req<'_>) -> Result<Reply, E> {
    let body: Value = serde_json::from_slice(r.body).map_err(|e| {
        E::json_parser(format!("Unexpected character: {e} at [line:{}, column:{}]", e.line(), e.column()))
    })?;
    let text = |k: &str| body.get(k).and_then(Value::as_str);
    let operation = match text("operation") {
        Some("query") => "query",
        Some("queryAll") => "queryAll",
        Some(other) => return Err(E::bad("INVALIDJOB", format!("InvalidJob : Invalid operation: {other}"))),
        None => return Err(E::bad("INVALIDJOB", "InvalidJob : Required field is missing: operation")),
    };
    let src = text("query")
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| E::bad("INVALIDJOB", "InvalidJob : Required field is missing: query"))?;
    if text("contentType").is_some_and(|c| c != "CSV") {
        return Err(E::bad("INVALIDJOB", "InvalidJob : contentType must be CSV"));
    }
    let dialect = csv_dialect(text("columnDelimiter"), text("lineEnding"))?;
    let query = soql::parse(&sh.schema, src, r.now)?;
    if let Some(why) = soql::bulk_unsupported(&query) {
        return Err(E::bad("FEATURENOTENABLED", why));
    }
    let env = Env {
        org: &st.org,
        schema: &sh.schema,
        version: &r.version,
        all_rows: operation == "queryAll",
        purge_before: r.now - Duration::days(15),
    };
    let ids: Vec<Id18> = soql::select(&env, &query)
        .iter()
        .filter_map(|rec| rec.fields.get("Id").and_then(Value::as_str).and_then(id18))
        .collect();
    st.bulk_seq += 1;
    let id = sfid::mint("750", st.bulk_seq);
    let object = soql::from(&query).to_string();
    let head = JobHead::new(id.clone(), operation, object, r.now, &r.version, dialect);
    let job = BulkJob { head, query, ids, state: JobState::UploadComplete };
    let out = info(sh, &job);
    st.bulk_jobs.insert(id, job);
    st.bulk_created.add(r.now, 1);
    Ok(Reply::json(200, out))
}

fn status(sh: &Shared, st: &mut State, r: &Req<'_>, id: &str) -> Result<Reply, E> {
    let polls_in_progress = sh.config.bulk_query_polls;
    let j = st.bulk_jobs.get_mut(id).ok_or_else(E::not_found)?;
    if matches!(j.state, JobState::UploadComplete | JobState::InProgress) {
        j.head.polls += 1;
        let next = if j.head.polls > polls_in_progress { JobState::JobComplete } else { JobState::InProgress };
        if next != j.state {
            j.state = next;
            j.head.modstamp = r.now;
        }
    }
    Ok(Reply::json(200, info(sh, j)))
}

fn abort(sh: &Shared, st: &mut State, r: &Req<'_>, id: &str) -> Result<Reply, E> {
    let body: Value = serde_json::from_slice(r.body).map_err(|e| E::json_parser(e.to_string()))?;
    let j = st.bulk_jobs.get_mut(id).ok_or_else(E::not_found)?;
    if body.get("state").and_then(Value::as_str) != Some("Aborted") {
        return Err(E::bad("INVALIDJOBSTATE", "Invalid state: a query job can only be set to Aborted"));
    }
    match j.state {
        JobState::JobComplete => return Err(invalid_state("Aborting already Completed Job not allowed")),
        JobState::Aborted => return Err(invalid_state("Aborting already Aborted Job not allowed")),
        _ => {}
    }
    j.state = JobState::Aborted;
    j.head.modstamp = r.now;
    Ok(Reply::json(200, info(sh, j)))
}

fn csv_field(out: &mut String, v: &Value) {
    out.push('"');
    let text = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for ch in text.chars() {
        if ch == '"' {
            out.push('"');
        }
        out.push(ch);
    }
    out.push('"');
}

fn results(sh: &Shared, st: &mut State, r: &Req<'_>, id: &str) -> Result<Reply, E> {
    let j = st.bulk_jobs.get(id).ok_or_else(E::not_found)?;
    if j.state != JobState::JobComplete {
        return Err(invalid_state(format!("Job {id} is not complete; its state is {}", j.state.name())));
    }
    j.head.check_results_version(&r.version)?;
    let bad_locator = || E::bad("INVALID_LOCATOR", "Invalid locator");
    let offset = match r.query.get("locator").map(String::as_str).filter(|l| !l.is_empty() && *l != "null") {
        None => 0,
        Some(l) => {
            let raw = BASE64_NOPAD.decode(l.trim_end_matches('=').as_bytes()).map_err(|_| bad_locator())?;
            let n: usize = std::str::from_utf8(&raw).ok().and_then(|s| s.parse().ok()).ok_or_else(bad_locator)?;
            if n > j.ids.len() {
                return Err(bad_locator());
            }
            n
        }
    };
    let max = match r.query.get("maxRecords") {
        None => MAX_RECORDS,
        Some(m) => match m.parse::<usize>() {
            Ok(n) if n > 0 => n.min(MAX_RECORDS),
            _ => return Err(E::bad("INVALIDREQUEST", format!("maxRecords must be a positive integer: {m}"))),
        },
    };
    let end = (offset + max).min(j.ids.len());
    let env = Env {
        org: &st.org,
        schema: &sh.schema,
        version: &r.version,
        all_rows: j.head.operation == "queryAll",
        purge_before: r.now - Duration::days(15),
    };
    let recs = st.org.by_id(&j.head.object);
    let rows: Vec<&Rec> =
        j.ids.get(offset..end).unwrap_or_default().iter().filter_map(|i| recs.and_then(|m| m.get(id_str(i)))).collect();
    let (delim, eol) = (j.head.delimiter.1, j.head.line_ending.1);
    let mut out = String::new();
    for (k, c) in soql::columns(&j.query).iter().enumerate() {
        if k > 0 {
            out.push(delim);
        }
        csv_field(&mut out, &Value::String(c.clone()));
    }
    out.push_str(eol);
    for rec in &rows {
        for (k, v) in soql::row_values(&env, &j.query, rec).iter().enumerate() {
            if k > 0 {
                out.push(delim);
            }
            csv_field(&mut out, v);
        }
        out.push_str(eol);
    }
    let locator = if end < j.ids.len() { BASE64_NOPAD.encode(end.to_string().as_bytes()) } else { "null".into() };
    let mut reply = Reply::text(200, "text/csv", out);
    reply.headers.push(("sforce-numberofrecords", rows.len().to_string()));
    reply.headers.push(("sforce-locator", locator));
    Ok(reply)
}
