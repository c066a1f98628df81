//! Bulk API 2.0 ingest jobs under `/services/data/vNN.N/jobs/ingest`.
//!
//! `POST` creates a job (state `Open`); `PUT …/{id}/batches` uploads CSV (`text/csv`, the job's
//! delimiter and line ending, a header row of field names); `PATCH {"state":"UploadComplete"}`
//! closes it and the rows are applied there, one by one, through the same writes as REST (each
//! row succeeds or fails alone); status requests then report `InProgress` for
//! [`super::SalesforceConfig::bulk_query_polls`] requests and `JobComplete` after.
//! `successfulResults` (`sf__Id`, `sf__Created`, the row), `failedResults` (`sf__Id`,
//! `sf__Error` as `CODE:message:fields --`, the row) and `unprocessedrecords` (rows of an aborted
//! job) are CSV. In a row an empty value leaves the field unset and `#N/A` sets it to null.
//! `hardDelete` deletes as `delete` does (the rows stay visible to `queryAll` and `/deleted`).

use serde_json::{Map, Value, json};

use super::context::{Req, Shared};
use super::envelope::Reply;
use super::errors::SalesforceApiError as E;
use super::jobs::{IngestJob, IngestState, JobHead, Outcome, csv_dialect, invalid_state};
use super::state::State;
use super::store::WriteCtx;
use crate::sfid;

fn info(sh: &Shared, j: &IngestJob, full: bool) -> Value {
    let mut o = j.head.info(&sh.user_id, j.state.name(), "V2Ingest");
    o.insert("contentUrl".into(), json!(format!("services/data/{}/jobs/ingest/{}/batches", j.head.version, j.head.id)));
    if let Some(ext) = &j.external_id {
        o.insert("externalIdFieldName".into(), json!(ext));
    }
    if full {
        let done = matches!(j.state, IngestState::JobComplete);
        let failed = j.outcomes.iter().filter(|x| matches!(x, Outcome::Failed { .. })).count();
        o.insert("numberRecordsProcessed".into(), json!(if done { j.outcomes.len() } else { 0 }));
        o.insert("numberRecordsFailed".into(), json!(if done { failed } else { 0 }));
        o.insert("retries".into(), json!(0));
        o.insert("totalProcessingTime".into(), json!(0));
        o.insert("apiActiveProcessingTime".into(), json!(0));
        o.insert("apexProcessingTime".into(), json!(0));
        if let Some(m) = &j.error_message {
            o.insert("errorMessage".into(), json!(m));
        }
    }
    Value::Object(o)
}

fn json_body(r: &Req<'_>) -> Result<Value, E> {
    serde_json::from_slice(r.body)
        .map_err(|e| E::json_parser(format!("Unexpected character: {e} at [line:{}, column:{}]", e.line(), e.column())))
}

/// Routes `jobs/ingest…`.
pub(crate) fn dispatch(sh: &Shared, st: &mut State, r: &Req<'_>, rest: &[&str]) -> Result<Reply, E> {
    match (rest, r.method) {
        ([], "POST") => create(sh, st, r),
        ([], "GET") => {
            let records: Vec<Value> = st.ingest_jobs.values().map(|j| info(sh, j, false)).collect();
            Ok(Reply::json(200, json!({"done": true, "records": records, "nextRecordsUrl": null})))
        }
        ([], m) => Err(E::method_not_allowed(m, "GET,POST")),
        ([id], "GET") => status(sh, st, r, id),
        ([id], "PATCH") => set_state(sh, st, r, id),
        ([id], "DELETE") => {
            let j = st.ingest_jobs.get(*id).ok_or_else(E::not_found)?;
            if matches!(j.state, IngestState::Open | IngestState::InProgress) {
                return Err(invalid_state(format!("Deleting a job in state {} is not allowed", j.state.name())));
            }
            st.ingest_jobs.remove(*id);
            Ok(Reply::empty(204))
        }
        ([_], m) => Err(E::method_not_allowed(m, "GET,PATCH,DELETE")),
        ([id, "batches"], "PUT") => upload(st, r, id),
        ([_, "batches"], m) => Err(E::method_not_allowed(m, "PUT")),
        ([id, kind @ ("successfulResults" | "failedResults" | "unprocessedrecords")], "GET") => {
            results(st, r, id, kind)
        }
        ([_, "successfulResults" | "failedResults" | "unprocessedrecords"], m) => Err(E::method_not_allowed(m, "GET")),
        _ => Err(E::not_found()),
    }
}

fn create(sh: &Shared, st: &mut State, r: &Req<'_>) -> Result<Reply, E> {
    let body = json_body(r)?;
    let text = |k: &str| body.get(k).and_then(Value::as_str);
    let missing = |f: &str| E::bad("INVALIDJOB", format!("InvalidJob : Required field is missing: {f}"));
    let operation = match text("operation") {
        Some("insert") => "insert",
        Some("update") => "update",
        Some("upsert") => "upsert",
        Some("delete") => "delete",
        Some("hardDelete") => "hardDelete",
        Some(other) => return Err(E::bad("INVALIDJOB", format!("InvalidJob : Invalid operation: {other}"))),
        None => return Err(missing("operation")),
    };
    let object = text("object").filter(|o| !o.is_empty()).ok_or_else(|| missing("object"))?;
    let o =
        sh.schema.obj(object).ok_or_else(|| E::bad("INVALIDJOB", format!("InvalidJob : Invalid object: {object}")))?;
    if text("contentType").is_some_and(|c| c != "CSV") {
        return Err(E::bad("INVALIDJOB", "InvalidJob : contentType must be CSV"));
    }
    let external_id = match (operation, text("externalIdFieldName")) {
        ("upsert", None) => return Err(missing("externalIdFieldName")),
        ("upsert", Some(f)) => match o.field(f) {
            Some(fd) if fd.external_id || fd.name == "Id" => Some(fd.name.clone()),
            _ => {
                return Err(E::bad(
                    "INVALIDJOB",
                    format!(
                        "InvalidJob : Field name provided, {f} does not match an External ID, Salesforce Id, or indexed field for {}",
                        o.name
                    ),
                ));
            }
        },
        _ => None,
    };
    let dialect = csv_dialect(text("columnDelimiter"), text("lineEnding"))?;
    st.bulk_seq += 1;
    let id = sfid::mint("750", st.bulk_seq);
    let head = JobHead::new(id.clone(), operation, o.name.to_string(), r.now, &r.version, dialect);
    let job = IngestJob {
        head,
        external_id,
        state: IngestState::Open,
        header: Vec::new(),
        rows: Vec::new(),
        outcomes: Vec::new(),
        error_message: None,
    };
    let out = info(sh, &job, false);
    st.ingest_jobs.insert(id, job);
    Ok(Reply::json(200, out))
}

fn status(sh: &Shared, st: &mut State, r: &Req<'_>, id: &str) -> Result<Reply, E> {
    let polls_in_progress = sh.config.bulk_query_polls;
    let j = st.ingest_jobs.get_mut(id).ok_or_else(E::not_found)?;
    if j.state == IngestState::InProgress {
        j.head.polls += 1;
        if j.head.polls > polls_in_progress {
            j.state = IngestState::JobComplete;
            j.head.modstamp = r.now;
        }
    }
    Ok(Reply::json(200, info(sh, j, true)))
}

/// Parses CSV text (RFC 4180 quoting) with the given delimiter; CRLF and LF both end a record.
fn parse_csv(text: &str, delim: char) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut any = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => {
                quoted = true;
                any = true;
            }
            '"' => return Err("a quote inside an unquoted field".into()),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                any = false;
            }
            c if c == delim => {
                row.push(std::mem::take(&mut field));
                any = true;
            }
            c => {
                field.push(c);
                any = true;
            }
        }
    }
    if quoted {
        return Err("an unterminated quoted field".into());
    }
    if any || !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

fn upload(st: &mut State, r: &Req<'_>, id: &str) -> Result<Reply, E> {
    let j = st.ingest_jobs.get_mut(id).ok_or_else(E::not_found)?;
    if j.state != IngestState::Open {
        return Err(invalid_state(format!("Job {id} is not open for uploads; its state is {}", j.state.name())));
    }
    let ct = r.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("text/csv") {
        return Err(E::bad("INVALIDCONTENTTYPE", format!("Content-Type must be text/csv, not '{ct}'")));
    }
    let text = std::str::from_utf8(r.body).map_err(|_| E::bad("INVALIDBATCH", "InvalidBatch : data is not UTF-8"))?;
    let mut rows =
        parse_csv(text, j.head.delimiter.1).map_err(|e| E::bad("INVALIDBATCH", format!("InvalidBatch : {e}")))?;
    if rows.is_empty() {
        return Err(E::bad("INVALIDBATCH", "InvalidBatch : no header row"));
    }
    let header = rows.remove(0);
    if !j.header.is_empty() && j.header != header {
        return Err(E::bad("INVALIDBATCH", "InvalidBatch : the header differs from the job's first upload"));
    }
    if let Some(n) = rows.iter().position(|row| row.len() != header.len()) {
        return Err(E::bad(
            "INVALIDBATCH",
            format!("InvalidBatch : row {} has {} fields, the header {}", n + 1, rows[n].len(), header.len()),
        ));
    }
    j.header = header;
    j.rows.extend(rows);
    Ok(Reply::empty(201))
}

fn set_state(sh: &Shared, st: &mut State, r: &Req<'_>, id: &str) -> Result<Reply, E> {
    let body = json_body(r)?;
    let want = body.get("state").and_then(Value::as_str).unwrap_or("");
    let j = st.ingest_jobs.get(id).ok_or_else(E::not_found)?;
    match (want, j.state) {
        ("UploadComplete", IngestState::Open) => {}
        ("Aborted", IngestState::Open | IngestState::InProgress) => {
            let j = st.ingest_jobs.get_mut(id).ok_or_else(E::not_found)?;
            j.state = IngestState::Aborted;
            j.head.modstamp = r.now;
            return Ok(Reply::json(200, info(sh, j, false)));
        }
        ("UploadComplete" | "Aborted", s) => {
            return Err(invalid_state(format!(
                "Changing the state of a job in state {} to {want} is not allowed",
                s.name()
            )));
        }
        _ => return Err(E::bad("INVALIDJOBSTATE", format!("Invalid state: {want}"))),
    }
    let (header, rows) = {
        let j = st.ingest_jobs.get_mut(id).ok_or_else(E::not_found)?;
        (j.header.clone(), std::mem::take(&mut j.rows))
    };
    let (operation, object, external_id) = {
        let j = &st.ingest_jobs[id];
        (j.head.operation, j.head.object.clone(), j.external_id.clone())
    };
    let mut outcomes = Vec::with_capacity(rows.len());
    let mut error_message = None;
    if header.is_empty() {
        error_message = Some("InvalidBatch : No data was uploaded".to_string());
    } else {
        let cx = WriteCtx { schema: &sh.schema, now: r.now, user: &sh.user_id };
        for row in &rows {
            outcomes.push(apply_row(st, &cx, operation, &object, external_id.as_deref(), &header, row));
        }
    }
    let j = st.ingest_jobs.get_mut(id).ok_or_else(E::not_found)?;
    j.rows = rows;
    j.outcomes = outcomes;
    j.head.modstamp = r.now;
    j.state = if error_message.is_some() { IngestState::Failed } else { IngestState::InProgress };
    j.error_message = error_message;
    let mut out = info(sh, j, false);
    if let Some(o) = out.as_object_mut() {
        // The answer to the close reports the state it was set to.
        o.insert("state".into(), json!("UploadComplete"));
    }
    Ok(Reply::json(200, out))
}

fn row_error(e: &E) -> String {
    format!("{}:{}:{} --", e.error_code, e.message, e.fields.join(","))
}

fn apply_row(
    st: &mut State,
    cx: &WriteCtx<'_>,
    operation: &str,
    object: &str,
    external_id: Option<&str>,
    header: &[String],
    row: &[String],
) -> Outcome {
    let mut input = Map::new();
    let mut id = String::new();
    for (k, v) in header.iter().zip(row) {
        if k.eq_ignore_ascii_case("Id") {
            id = v.clone();
            if operation == "insert" && !v.is_empty() {
                input.insert(k.clone(), Value::String(v.clone()));
            }
            continue;
        }
        match v.as_str() {
            "" => {}
            "#N/A" => {
                input.insert(k.clone(), Value::Null);
            }
            _ => {
                input.insert(k.clone(), Value::String(v.clone()));
            }
        }
    }
    let fail = |id: &str, e: E| Outcome::Failed { id: id.to_string(), error: row_error(&e) };
    let need_id = |id: &str| {
        if id.is_empty() {
            Err(E::bad("MISSING_ARGUMENT", "Id not specified in an update call").with_fields(["Id"]))
        } else {
            Ok(())
        }
    };
    match operation {
        "insert" => match st.org.create(cx, object, &input, None) {
            Ok(id) => Outcome::Ok { id, created: true },
            Err(e) => fail("", e),
        },
        "update" => {
            if let Err(e) = need_id(&id) {
                return fail("", e);
            }
            match st.org.update(cx, object, &id, &input) {
                Ok(()) => Outcome::Ok { id: sfid::to18(&id).unwrap_or(id), created: false },
                Err(e) => fail(&id, e),
            }
        }
        "delete" | "hardDelete" => {
            if let Err(e) = need_id(&id) {
                return fail("", e);
            }
            match st.org.delete(cx, object, &id) {
                Ok(()) => Outcome::Ok { id: sfid::to18(&id).unwrap_or(id), created: false },
                Err(e) => fail(&id, e),
            }
        }
        _ => {
            let field = external_id.unwrap_or("Id");
            let key = if field == "Id" {
                id.clone()
            } else {
                input
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(field))
                    .and_then(|(_, v)| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            if key.is_empty() {
                return fail(
                    "",
                    E::bad("MISSING_ARGUMENT", format!("{field} not specified in an upsert call")).with_fields([field]),
                );
            }
            let found: Vec<String> = if field == "Id" {
                sfid::to18(&key)
                    .filter(|k| st.org.get(object, k).is_some_and(|r| r.deleted_at.is_none()))
                    .into_iter()
                    .collect()
            } else {
                st.org.find_by(object, field, &key)
            };
            match found.as_slice() {
                [] if field == "Id" => fail(&key, E::bad("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")),
                [] => match st.org.create(cx, object, &input, None) {
                    Ok(id) => Outcome::Ok { id, created: true },
                    Err(e) => fail("", e),
                },
                [one] => {
                    input.retain(|k, _| !k.eq_ignore_ascii_case(field));
                    match st.org.update(cx, object, one, &input) {
                        Ok(()) => Outcome::Ok { id: one.clone(), created: false },
                        Err(e) => fail(one, e),
                    }
                }
                _ => fail(
                    "",
                    E::bad(
                        "DUPLICATE_EXTERNAL_ID",
                        format!("{field}: more than one record found for external id field"),
                    ),
                ),
            }
        }
    }
}

fn csv_field(out: &mut String, text: &str) {
    out.push('"');
    for ch in text.chars() {
        if ch == '"' {
            out.push('"');
        }
        out.push(ch);
    }
    out.push('"');
}

fn results(st: &mut State, r: &Req<'_>, id: &str, kind: &str) -> Result<Reply, E> {
    let j = st.ingest_jobs.get(id).ok_or_else(E::not_found)?;
    if !matches!(j.state, IngestState::JobComplete | IngestState::Failed | IngestState::Aborted) {
        return Err(invalid_state(format!("Job {id} is not complete; its state is {}", j.state.name())));
    }
    j.head.check_results_version(&r.version)?;
    let (delim, eol) = (j.head.delimiter.1, j.head.line_ending.1);
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        for (k, c) in cells.enumerate() {
            if k > 0 {
                out.push(delim);
            }
            csv_field(out, c);
        }
        out.push_str(eol);
    };
    let head: &[&str] = match kind {
        "successfulResults" => &["sf__Id", "sf__Created"],
        "failedResults" => &["sf__Id", "sf__Error"],
        _ => &[],
    };
    line(&mut out, &mut head.iter().copied().chain(j.header.iter().map(String::as_str)));
    let processed = j.outcomes.len();
    for (k, row) in j.rows.iter().enumerate() {
        let pre: Vec<String> = match (kind, j.outcomes.get(k)) {
            ("successfulResults", Some(Outcome::Ok { id, created })) => vec![id.clone(), created.to_string()],
            ("failedResults", Some(Outcome::Failed { id, error })) => vec![id.clone(), error.clone()],
            ("unprocessedrecords", None) if k >= processed => vec![],
            _ => continue,
        };
        line(&mut out, &mut pre.iter().map(String::as_str).chain(row.iter().map(String::as_str)));
    }
    Ok(Reply::text(200, "text/csv", out))
}
