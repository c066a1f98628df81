//! Bulk extract of leads and activities: job state machine, CSV generation, ranged downloads.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};

use super::context::Ctx;
use super::envelope::{Reply, parse_ts, value_string};
use super::jobs::{ExportFilter as Filter, ExportJob, ExportKind as Kind, ExportStatus as Status};
use super::limits::central_day;
use super::state::{DELETE_LEAD, Db, activity_json};

const MAX_PROCESSING: usize = 2;
const MAX_QUEUED: usize = 10;
const ACTIVITY_FIELDS: &[&str] = &[
    "marketoGUID",
    "leadId",
    "activityDate",
    "activityTypeId",
    "campaignId",
    "primaryAttributeValueId",
    "primaryAttributeValue",
    "attributes",
    "actionResult",
];
const ACTIVITY_DEFAULT: usize = 8;

fn kind_of(k: &str) -> Kind {
    if k == "activities" { Kind::Activities } else { Kind::Leads }
}

fn delimiter(format: &str) -> Option<char> {
    match format {
        "CSV" => Some(','),
        "TSV" => Some('\t'),
        "SSV" => Some(';'),
        _ => None,
    }
}

fn cell(out: &mut String, v: Option<String>, delim: char) {
    match v {
        None => out.push_str("null"),
        Some(s) if s.contains(delim) || s.contains('"') || s.contains('\n') || s.contains('\r') => {
            out.push('"');
            out.push_str(&s.replace('"', "\"\""));
            out.push('"');
        }
        Some(s) => out.push_str(&s),
    }
}

fn row(out: &mut String, cells: Vec<Option<String>>, delim: char) {
    for (i, c) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push(delim);
        }
        cell(out, c, delim);
    }
    out.push('\n');
}

fn in_range(t: DateTime<Utc>, f: &Filter) -> bool {
    t >= f.start && t <= f.end
}

/// Builds the file from the current data (the snapshot taken when processing starts).
fn generate(db: &Db, job: &ExportJob) -> (Vec<u8>, u64) {
    let delim = delimiter(&job.format).unwrap_or(',');
    let mut out = String::new();
    row(&mut out, job.headers.iter().cloned().map(Some).collect(), delim);
    let mut n = 0u64;
    match job.kind {
        Kind::Leads => {
            for lead in db.leads.values() {
                let t = lead.get(job.filter.field).and_then(Value::as_str).and_then(parse_ts);
                if !t.is_some_and(|t| in_range(t, &job.filter)) {
                    continue;
                }
                n += 1;
                row(&mut out, job.fields.iter().map(|f| lead.get(f).and_then(value_string)).collect(), delim);
            }
        }
        Kind::Activities => {
            for a in db.activities.values() {
                let f = &job.filter;
                if a.type_id == DELETE_LEAD
                    || !in_range(a.date, f)
                    || f.type_ids.as_ref().is_some_and(|t| !t.contains(&a.type_id))
                    || f.primary_ids.as_ref().is_some_and(|p| !a.primary_value_id.is_some_and(|id| p.contains(&id)))
                    || f.primary_values
                        .as_ref()
                        .is_some_and(|p| !a.primary_value.as_ref().is_some_and(|v| p.contains(v)))
                {
                    continue;
                }
                n += 1;
                let v = activity_json(a);
                let cells = job
                    .fields
                    .iter()
                    .map(|field| match field.as_str() {
                        "attributes" => {
                            let attrs: Map<String, Value> = v["attributes"]
                                .as_array()
                                .map(Vec::as_slice)
                                .unwrap_or(&[])
                                .iter()
                                .filter_map(|x| Some((x.get("name")?.as_str()?.to_string(), x.get("value")?.clone())))
                                .collect();
                            (!attrs.is_empty()).then(|| Value::Object(attrs).to_string())
                        }
                        "actionResult" => Some("succeeded".to_string()),
                        other => v.get(other).and_then(value_string),
                    })
                    .collect();
                row(&mut out, cells, delim);
            }
        }
    }
    (out.into_bytes(), n)
}

/// Moves jobs along: Processing → Completed after the processing time (fixed plus per 1,000 rows),
/// Queued → Processing when a slot is free (snapshotting the data).
fn advance(db: &mut Db, ctx: &Ctx<'_>) {
    let now = ctx.now;
    loop {
        let mut changed = false;
        for i in 0..db.jobs.len() {
            let job = &db.jobs[i];
            if job.status == Status::Processing && ctx.processing_done(job.started_at, job.records) {
                let size = job.file.as_ref().map_or(0, |f| f.len() as u64);
                db.jobs[i].status = Status::Completed;
                db.jobs[i].finished_at = Some(now);
                let day = central_day(now);
                if db.export_bytes.0 != day {
                    db.export_bytes = (day, 0);
                }
                db.export_bytes.1 = db.export_bytes.1.saturating_add(size);
                changed = true;
            }
        }
        let processing_count = db.jobs.iter().filter(|j| j.status == Status::Processing).count();
        if processing_count < MAX_PROCESSING {
            let next = db
                .jobs
                .iter()
                .enumerate()
                .filter(|(_, j)| j.status == Status::Queued)
                .min_by_key(|(_, j)| j.queued_at)
                .map(|(i, _)| i);
            if let Some(i) = next {
                let (file, n) = generate(db, &db.jobs[i]);
                let job = &mut db.jobs[i];
                job.status = Status::Processing;
                job.started_at = Some(now);
                job.file = Some(file);
                job.records = n;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
}

fn date_range(v: Option<&Value>, name: &str) -> Result<(DateTime<Utc>, DateTime<Utc>), Reply> {
    let Some(v) = v else {
        return Err(Reply::err("1003", format!("{name} filter is required")));
    };
    let (Some(s), Some(e)) = (v.get("startAt").and_then(Value::as_str), v.get("endAt").and_then(Value::as_str)) else {
        return Err(Reply::err("1003", format!("{name} requires startAt and endAt")));
    };
    for x in [s, e] {
        if x.contains('.') {
            return Err(Reply::err("1003", format!("Invalid date '{x}': milliseconds are not allowed")));
        }
    }
    let (Some(start), Some(end)) = (parse_ts(s), parse_ts(e)) else {
        return Err(Reply::err("1003", "Invalid date format"));
    };
    if end < start {
        return Err(Reply::err("1003", "endAt must not be before startAt"));
    }
    if end - start > Duration::days(31) {
        return Err(Reply::err("1003", "Date range exceeds 31 days"));
    }
    Ok((start, end))
}

fn int_list(v: Option<&Value>) -> Option<Vec<i64>> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_i64).collect())
}

pub(crate) fn create(ctx: &Ctx<'_>, kind: &str) -> Reply {
    let kind = kind_of(kind);
    let body = match ctx.json() {
        Ok(b) => b,
        Err(e) => return e,
    };
    let format = body.get("format").and_then(Value::as_str).unwrap_or("CSV").to_ascii_uppercase();
    if delimiter(&format).is_none() {
        return Reply::err("1003", format!("Invalid format '{format}'"));
    }
    let Some(filter) = body.get("filter").and_then(Value::as_object) else {
        return Reply::err("1003", "filter is required");
    };
    let mut db = ctx.shared.db();
    let fields: Vec<String> = match body.get("fields").and_then(Value::as_array) {
        Some(a) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        None if kind == Kind::Activities => ACTIVITY_FIELDS[..ACTIVITY_DEFAULT].iter().map(|s| s.to_string()).collect(),
        None => return Reply::err("1003", "fields is required"),
    };
    if fields.is_empty() {
        return Reply::err("1003", "fields cannot be empty");
    }
    for f in &fields {
        let known = match kind {
            Kind::Leads => db.field(f).is_some(),
            Kind::Activities => ACTIVITY_FIELDS.contains(&f.as_str()),
        };
        if !known {
            return Reply::err("1006", format!("Field '{f}' not found"));
        }
    }
    let filter = match kind {
        Kind::Leads => {
            const KNOWN: &[&str] =
                &["createdAt", "updatedAt", "staticListId", "staticListName", "smartListId", "smartListName"];
            if let Some(k) = filter.keys().find(|k| !KNOWN.contains(&k.as_str())) {
                return Reply::err("1003", format!("Invalid filter type '{k}'"));
            }
            if filter.len() != 1 {
                return Reply::err("1003", "Exactly one filter type is required");
            }
            let key = filter.keys().next().map(String::as_str).unwrap_or("");
            let unsupported = matches!(key, "smartListId" | "smartListName")
                || (key == "updatedAt" && !ctx.shared.config.bulk_updated_at_filter);
            if unsupported && !ctx.shared.config.bulk_updated_at_filter {
                return Reply::err("1035", format!("Unsupported filter type for target subscription: {key}"));
            }
            let field = match key {
                "createdAt" => "createdAt",
                "updatedAt" => "updatedAt",
                other => {
                    return Reply::err("1003", format!("Filter '{other}' is not supported by the emulator (no lists)"));
                }
            };
            let (start, end) = match date_range(filter.get(field), field) {
                Ok(r) => r,
                Err(e) => return e,
            };
            Filter { field, start, end, type_ids: None, primary_ids: None, primary_values: None }
        }
        Kind::Activities => {
            let (start, end) = match date_range(filter.get("createdAt"), "createdAt") {
                Ok(r) => r,
                Err(e) => return e,
            };
            let type_ids = int_list(filter.get("activityTypeIds"));
            if type_ids.as_ref().is_some_and(|t| t.contains(&DELETE_LEAD)) {
                return Reply::err("1003", "Activity type 37 (Delete Lead) cannot be exported");
            }
            let primary_ids = int_list(filter.get("primaryAttributeValueIds"));
            let primary_values: Option<Vec<String>> = filter
                .get("primaryAttributeValues")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect());
            if (primary_ids.is_some() || primary_values.is_some()) && type_ids.is_none() {
                return Reply::err("1003", "primaryAttributeValue filters require activityTypeIds");
            }
            if primary_ids.is_some() && primary_values.is_some() {
                return Reply::err("1003", "Use primaryAttributeValueIds or primaryAttributeValues, not both");
            }
            if primary_ids.as_ref().is_some_and(|p| p.len() > 50)
                || primary_values.as_ref().is_some_and(|p| p.len() > 50)
            {
                return Reply::err("1003", "At most 50 primary attribute values");
            }
            Filter { field: "createdAt", start, end, type_ids, primary_ids, primary_values }
        }
    };
    let names = body.get("columnHeaderNames").and_then(Value::as_object);
    let headers =
        fields.iter().map(|f| names.and_then(|n| n.get(f)).and_then(Value::as_str).unwrap_or(f).to_string()).collect();
    let job = ExportJob {
        id: uuid::Uuid::new_v4().to_string(),
        kind,
        client_id: ctx.client_id.clone(),
        format,
        fields,
        headers,
        filter,
        status: Status::Created,
        created_at: ctx.now,
        queued_at: None,
        started_at: None,
        finished_at: None,
        file: None,
        records: 0,
    };
    let out = job.render(false);
    db.jobs.push(job);
    Reply::ok(vec![out])
}

fn find_job<'a>(db: &'a mut Db, ctx: &Ctx<'_>, kind: Kind, id: &str) -> Option<&'a mut ExportJob> {
    db.jobs.iter_mut().find(|j| j.id == id && j.kind == kind && j.client_id == ctx.client_id)
}

fn not_found(id: &str) -> Reply {
    Reply::err("1003", format!("Export job '{id}' not found"))
}

pub(crate) fn job_op(ctx: &Ctx<'_>, kind: &str, id: &str, op: &str) -> Reply {
    let kind = kind_of(kind);
    let mut db = ctx.shared.db();
    advance(&mut db, ctx);
    let busy = db.jobs.iter().filter(|j| matches!(j.status, Status::Queued | Status::Processing)).count();
    let day = central_day(ctx.now);
    let exported = if db.export_bytes.0 == day { db.export_bytes.1 } else { 0 };
    let limits = &ctx.shared.config.limits;
    let quota = if limits.enabled { limits.bulk_export_daily_bytes } else { u64::MAX };
    let Some(job) = find_job(&mut db, ctx, kind, id) else {
        return not_found(id);
    };
    if op == "enqueue.json" {
        match job.status {
            Status::Created => {}
            Status::Queued | Status::Processing => return Reply::err("1029", "Export job already queued"),
            other => return Reply::err("1003", format!("Job in status {} cannot be enqueued", other.name(false))),
        }
        if busy >= MAX_QUEUED {
            return Reply::err("1029", format!("Too many jobs ({MAX_QUEUED}) in queue"));
        }
        if exported >= quota {
            return Reply::err("1029", "Export daily quota exceeded");
        }
        job.status = Status::Queued;
        job.queued_at = Some(ctx.now);
    } else {
        match job.status {
            Status::Created | Status::Queued | Status::Processing => {
                job.status = Status::Cancelled;
                job.file = None;
            }
            other => return Reply::err("1003", format!("Job in status {} cannot be cancelled", other.name(false))),
        }
    }
    Reply::ok(vec![job.render(false)])
}

pub(crate) fn status(ctx: &Ctx<'_>, kind: &str, id: &str) -> Reply {
    let kind = kind_of(kind);
    let mut db = ctx.shared.db();
    advance(&mut db, ctx);
    match find_job(&mut db, ctx, kind, id) {
        Some(j) => Reply::ok(vec![j.render(false)]),
        None => not_found(id),
    }
}

fn parse_range(h: &str, len: usize) -> Option<(usize, usize)> {
    let spec = h.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if len == 0 {
        return None;
    }
    let (start, end) = if a.is_empty() {
        let n: usize = b.parse().ok()?;
        (len.saturating_sub(n), len - 1)
    } else {
        let s: usize = a.parse().ok()?;
        let e: usize = if b.is_empty() { len - 1 } else { b.parse::<usize>().ok()?.min(len - 1) };
        (s, e)
    };
    (start <= end && start < len).then_some((start, end))
}

pub(crate) fn file(ctx: &Ctx<'_>, kind: &str, id: &str) -> Reply {
    let kind = kind_of(kind);
    let mut db = ctx.shared.db();
    advance(&mut db, ctx);
    let Some(job) = find_job(&mut db, ctx, kind, id) else {
        return Reply::text(404, "Export job not found");
    };
    let (Status::Completed, Some(file)) = (job.status, job.file.as_ref()) else {
        return Reply::text(404, "Export file not available");
    };
    let content_type = if job.format == "CSV" { "text/csv; charset=utf-8" } else { "text/plain; charset=utf-8" };
    let range = ctx.headers.get(axum::http::header::RANGE).and_then(|v| v.to_str().ok());
    match range {
        None => Reply::Raw {
            status: 200,
            content_type,
            headers: vec![("accept-ranges", "bytes".into())],
            body: file.clone(),
            outcome: None,
        },
        Some(r) => match parse_range(r, file.len()) {
            Some((s, e)) => Reply::Raw {
                status: 206,
                content_type,
                headers: vec![
                    ("accept-ranges", "bytes".into()),
                    ("content-range", format!("bytes {s}-{e}/{}", file.len())),
                ],
                body: file[s..=e].to_vec(),
                outcome: None,
            },
            None => Reply::Raw {
                status: 416,
                content_type: "text/plain; charset=utf-8",
                headers: vec![("content-range", format!("bytes */{}", file.len()))],
                body: b"Requested range not satisfiable".to_vec(),
                outcome: Some("416".into()),
            },
        },
    }
}

pub(crate) fn list(ctx: &Ctx<'_>, kind: &str) -> Reply {
    let kind = kind_of(kind);
    let batch = match ctx.batch_size() {
        Ok(b) => b,
        Err(e) => return e,
    };
    let wanted: Option<Vec<String>> = ctx
        .param("status")
        .map(|s| s.split(',').map(|x| x.trim().to_ascii_lowercase().replace("canceled", "cancelled")).collect());
    let offset = match ctx.param("nextPageToken") {
        None => 0,
        Some(t) => match data_encoding::BASE32
            .decode(t.as_bytes())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("jobs,").and_then(|n| n.parse::<usize>().ok()))
        {
            Some(n) => n,
            None => return Reply::err("1003", "Invalid nextPageToken"),
        },
    };
    let mut db = ctx.shared.db();
    advance(&mut db, ctx);
    let cutoff = ctx.now - Duration::days(7);
    let jobs: Vec<Value> = db
        .jobs
        .iter()
        .filter(|j| j.kind == kind && j.client_id == ctx.client_id && j.created_at >= cutoff)
        .filter(|j| wanted.as_ref().is_none_or(|w| w.contains(&j.status.name(false).to_ascii_lowercase())))
        .map(|j| j.render(true))
        .collect();
    let page: Vec<Value> = jobs.iter().skip(offset).take(batch).cloned().collect();
    let more = offset + page.len() < jobs.len();
    let mut r = Reply::ok(page).with("moreResult", json!(more));
    if more {
        let token = data_encoding::BASE32.encode(format!("jobs,{}", offset + batch).as_bytes());
        r = r.with("nextPageToken", json!(token));
    }
    r
}
