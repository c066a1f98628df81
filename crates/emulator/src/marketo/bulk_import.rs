//! Bulk lead import: `POST /bulk/v1/leads.json` (multipart/form-data `file`), batch status, and the
//! failures / warnings files. Batches move Queued → Importing → Complete (or Failed) on the
//! emulator clock like bulk export jobs (at most 2 importing, 10 queued including those), and
//! write leads exactly as Sync Leads does, with the same activities.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::context::Ctx;
use super::envelope::Reply;
use super::jobs::{ImportJob, ImportStatus as Status};
use super::leads::upsert;
use super::state::Db;

const MAX_IMPORTING: usize = 2;
const MAX_QUEUED: usize = 10;

/// Splits delimited text into rows (RFC 4180 quoting: `"…"`, `""` for a quote, newlines inside
/// quotes); blank lines are dropped.
fn parse_delimited(text: &str, delim: char) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' => quoted = false,
                _ => cell.push(c),
            }
            continue;
        }
        match c {
            '"' if cell.is_empty() => quoted = true,
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut cell));
                if !(row.len() == 1 && row[0].is_empty()) {
                    rows.push(std::mem::take(&mut row));
                } else {
                    row.clear();
                }
            }
            c if c == delim => row.push(std::mem::take(&mut cell)),
            c => cell.push(c),
        }
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push(row);
    }
    rows
}

fn write_cell(out: &mut String, s: &str, delim: char) {
    if s.contains(delim) || s.contains('"') || s.contains('\n') || s.contains('\r') {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn write_row(out: &mut String, cells: impl Iterator<Item = String>, delim: char) {
    for (i, c) in cells.enumerate() {
        if i > 0 {
            out.push(delim);
        }
        write_cell(out, &c, delim);
    }
    out.push('\n');
}

/// The parts of a multipart/form-data body: `(name, content)` (613 when it is not one).
fn multipart(content_type: &str, body: &[u8]) -> Result<Vec<(String, Vec<u8>)>, Reply> {
    let bad = || Reply::err("613", "Invalid multipart request");
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()
        .map(|b| b.trim_matches('"').to_string())
        .filter(|b| !b.is_empty())
        .ok_or_else(bad)?;
    let delim = format!("--{boundary}").into_bytes();
    let find = |hay: &[u8], needle: &[u8], from: usize| -> Option<usize> {
        hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
    };
    let mut pos = find(body, &delim, 0).ok_or_else(bad)? + delim.len();
    let mut parts = Vec::new();
    loop {
        if body.get(pos..pos + 2) == Some(b"--") {
            break;
        }
        let start = pos + if body.get(pos..pos + 2) == Some(b"\r\n") { 2 } else { 0 };
        let head_end = find(body, b"\r\n\r\n", start).ok_or_else(bad)?;
        let headers = String::from_utf8_lossy(&body[start..head_end]).to_string();
        let mut close = b"\r\n".to_vec();
        close.extend_from_slice(&delim);
        let data_start = head_end + 4;
        let data_end = find(body, &close, data_start).ok_or_else(bad)?;
        let name = headers
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))
            .and_then(|l| {
                l.split(';').find_map(|p| p.trim().strip_prefix("name=").map(|n| n.trim_matches('"').to_string()))
            })
            .ok_or_else(bad)?;
        parts.push((name, body[data_start..data_end].to_vec()));
        pos = data_end + close.len();
    }
    Ok(parts)
}

/// Moves batches along: Importing → Complete/Failed after the processing time (the rows are
/// written then), Queued → Importing (FIFO) while fewer than 2 import.
fn advance(db: &mut Db, ctx: &Ctx<'_>) {
    let now = ctx.now;
    loop {
        let mut changed = false;
        for i in 0..db.imports.len() {
            let job = &db.imports[i];
            if job.status == Status::Importing && ctx.processing_done(job.started_at, job.rows.len() as u64) {
                let mut job = db.imports[i].clone();
                run(db, &mut job, now);
                db.imports[i] = job;
                changed = true;
            }
        }
        let importing = db.imports.iter().filter(|j| j.status == Status::Importing).count();
        if importing < MAX_IMPORTING
            && let Some(j) =
                db.imports.iter_mut().filter(|j| j.status == Status::Queued).min_by_key(|j| (j.queued_at, j.id))
        {
            j.status = Status::Importing;
            j.started_at = Some(now);
            changed = true;
        }
        if !changed {
            break;
        }
    }
}

/// Writes a batch's rows (createOrUpdate by the lookup field, as Sync Leads) and records failures
/// and warnings.
fn run(db: &mut Db, job: &mut ImportJob, now: DateTime<Utc>) {
    let action = if job.lookup == "id" { "updateOnly" } else { "createOrUpdate" };
    for row in std::mem::take(&mut job.rows) {
        if row.len() != job.header.len() {
            let why = format!("Row has {} columns, header has {}", row.len(), job.header.len());
            job.failures.push((row, why));
            continue;
        }
        let mut rec = Map::new();
        let mut warning = None;
        let mut failure = None;
        for (name, raw) in job.header.iter().zip(&row) {
            if raw.is_empty() {
                continue;
            }
            let Some(def) = db.field(name) else { continue };
            let value = match def.data_type.as_str() {
                "integer" | "score" => raw.trim().parse::<i64>().map(Value::from).ok(),
                "float" | "currency" | "percent" => raw.trim().parse::<f64>().ok().map(Value::from),
                "boolean" => match raw.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => Some(Value::Bool(true)),
                    "false" | "0" | "no" => Some(Value::Bool(false)),
                    _ => None,
                },
                _ => match def.length {
                    Some(len) if raw.chars().count() > len as usize => {
                        warning = Some(format!("Value for field '{name}' truncated to {len} characters"));
                        Some(Value::String(raw.chars().take(len as usize).collect()))
                    }
                    _ => Some(Value::String(raw.clone())),
                },
            };
            match value {
                Some(v) => {
                    rec.insert(name.clone(), v);
                }
                None => {
                    failure = Some(format!("Invalid value '{raw}' for field '{name}'"));
                    break;
                }
            }
        }
        if let Some(why) = failure {
            job.failures.push((row, why));
            continue;
        }
        match upsert(db, &rec, action, &job.lookup, now, "List import") {
            Ok((id, status)) => {
                job.imported += 1;
                if status == "created"
                    && let (Some(p), Some(lead)) = (job.partition, db.leads.get_mut(&id))
                {
                    lead.insert("leadPartitionId".into(), json!(p));
                }
                if let Some(w) = warning {
                    job.warnings.push((row, w));
                }
            }
            Err((_, why)) => job.failures.push((row, why)),
        }
    }
    job.status = if job.imported == 0 && !job.failures.is_empty() { Status::Failed } else { Status::Complete };
}

/// `POST /bulk/v1/leads.json`: a multipart/form-data upload of `file` with `format`
/// (csv|tsv|ssv), optional `lookupField` (default email), `partitionName`, `listId` — as query
/// parameters or form fields.
pub(crate) fn create(ctx: &Ctx<'_>) -> Reply {
    let ct = ctx.headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("multipart/form-data") {
        return Reply::err("612", "Invalid Content Type");
    }
    let parts = match multipart(ct, &ctx.body) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let form = |k: &str| {
        parts
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| String::from_utf8_lossy(v).trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let param = |k: &str| ctx.param(k).map(str::to_string).or_else(|| form(k));
    let Some(format) = param("format") else {
        return Reply::err("1003", "format cannot be blank");
    };
    let delim = match format.to_ascii_lowercase().as_str() {
        "csv" => ',',
        "tsv" => '\t',
        "ssv" => ';',
        _ => return Reply::err("1003", format!("Invalid format '{format}', must be one of csv, tsv, ssv")),
    };
    let Some((_, file)) = parts.iter().find(|(n, _)| n == "file") else {
        return Reply::err("1003", "file cannot be blank");
    };
    let text = String::from_utf8_lossy(file.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(file)).to_string();
    let mut rows = parse_delimited(&text, delim).into_iter();
    let Some(header) = rows.next().map(|h| h.into_iter().map(|c| c.trim().to_string()).collect::<Vec<_>>()) else {
        return Reply::err("1003", "Empty file");
    };
    let lookup = param("lookupField").unwrap_or_else(|| "email".into());
    let mut db = ctx.shared.db();
    if let Some(bad) = header.iter().find(|h| db.field(h).is_none()) {
        return Reply::err("1006", format!("Field '{bad}' not found"));
    }
    if db.field(&lookup).is_none() {
        return Reply::err("1006", format!("Field '{lookup}' not found"));
    }
    if !header.contains(&lookup) {
        return Reply::err("1003", format!("Lookup field '{lookup}' is not a column of the file"));
    }
    let partition = match param("partitionName") {
        None => None,
        Some(n) => match db.partitions.iter().find(|p| p.name.eq_ignore_ascii_case(&n)) {
            Some(p) => Some(p.id),
            None => return Reply::err("1009", format!("Partition '{n}' does not exist")),
        },
    };
    if let Some(list) = param("listId") {
        // The emulator keeps no static lists.
        return Reply::err("1013", format!("Static list '{list}' not found"));
    }
    advance(&mut db, ctx);
    if db.imports.iter().filter(|j| matches!(j.status, Status::Queued | Status::Importing)).count() >= MAX_QUEUED {
        return Reply::err("1016", "Too many imports");
    }
    let id = db.next_import_id;
    db.next_import_id += 1;
    let job = ImportJob {
        id,
        status: Status::Queued,
        delim,
        header,
        rows: rows.collect(),
        lookup,
        partition,
        queued_at: ctx.now,
        started_at: None,
        imported: 0,
        failures: Vec::new(),
        warnings: Vec::new(),
    };
    let out = job.render();
    db.imports.push(job);
    Reply::ok(vec![out])
}

fn not_found(id: &str) -> Reply {
    Reply::err("1003", format!("Import batch '{id}' not found"))
}

fn find<'a>(db: &'a Db, id: &str) -> Option<&'a ImportJob> {
    let id = id.parse::<i64>().ok()?;
    db.imports.iter().find(|j| j.id == id)
}

/// `GET /bulk/v1/leads/batch/{batchId}.json`.
pub(crate) fn status(ctx: &Ctx<'_>, id: &str) -> Reply {
    let mut db = ctx.shared.db();
    advance(&mut db, ctx);
    match find(&db, id) {
        Some(j) => Reply::ok(vec![j.render()]),
        None => not_found(id),
    }
}

/// `GET /bulk/v1/leads/batch/{batchId}/failures.json` and `…/warnings.json`: the failed (or
/// warned) rows in the import's format with an `Import Failure Reason` / `Import Warning Reason`
/// column; 404 plain text until the batch has finished.
pub(crate) fn file(ctx: &Ctx<'_>, id: &str, warnings: bool) -> Reply {
    let mut db = ctx.shared.db();
    advance(&mut db, ctx);
    let Some(job) = find(&db, id) else {
        return not_found(id);
    };
    if !matches!(job.status, Status::Complete | Status::Failed) {
        return Reply::text(404, "Import batch not finished");
    }
    let (rows, column) =
        if warnings { (&job.warnings, "Import Warning Reason") } else { (&job.failures, "Import Failure Reason") };
    let mut out = String::new();
    write_row(&mut out, job.header.iter().cloned().chain(std::iter::once(column.to_string())), job.delim);
    for (row, why) in rows {
        write_row(&mut out, row.iter().cloned().chain(std::iter::once(why.clone())), job.delim);
    }
    Reply::Raw {
        status: 200,
        content_type: if job.delim == ',' { "text/csv; charset=utf-8" } else { "text/plain; charset=utf-8" },
        headers: Vec::new(),
        body: out.into_bytes(),
        outcome: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimited_text_honours_quotes_and_blank_lines() {
        let rows = parse_delimited("a,b\r\n\"x,1\",\"say \"\"hi\"\"\"\n\nlast,\"multi\nline\"", ',');
        assert_eq!(rows, vec![vec!["a", "b"], vec!["x,1", "say \"hi\""], vec!["last", "multi\nline"]]);
        assert_eq!(parse_delimited("a;b\n1;2\n", ';'), vec![vec!["a", "b"], vec!["1", "2"]]);
    }

    #[test]
    fn multipart_parts_are_split_by_boundary() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"format\"\r\n\r\ncsv\r\n--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"l.csv\"\r\nContent-Type: text/csv\r\n\r\nemail\na@b.c\n\r\n--XX--\r\n";
        let parts = multipart("multipart/form-data; boundary=XX", body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], ("format".to_string(), b"csv".to_vec()));
        assert_eq!(parts[1], ("file".to_string(), b"email\na@b.c\n".to_vec()));
        assert!(multipart("multipart/form-data", body).is_err());
    }
}
