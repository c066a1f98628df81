//! Lead endpoints: get by filter / id, describe, sync, delete, merge.

use serde_json::{Map, Value, json};

use super::context::Ctx;
use super::envelope::{Reply, value_string};
use super::fields::{self, FieldDef, requested_fields};
use super::state::{Db, Lead};

/// A lead restricted to `fields`; `id` always present, null fields omitted.
pub(crate) fn render(lead: &Lead, fields: &[String]) -> Value {
    let mut out = Map::new();
    if let Some(id) = lead.get("id") {
        out.insert("id".into(), id.clone());
    }
    for f in fields {
        if let Some(v) = lead.get(f)
            && !v.is_null()
        {
            out.insert(f.clone(), v.clone());
        }
    }
    Value::Object(out)
}

fn encode_token(s: &str) -> String {
    data_encoding::BASE32.encode(s.as_bytes())
}

fn decode_token(t: &str) -> Option<String> {
    data_encoding::BASE32.decode(t.trim().as_bytes()).ok().and_then(|b| String::from_utf8(b).ok())
}

/// What a paged lead read asks for: the fields to render, the page size, and the lead id the page
/// starts after (0 for the first page).
pub(crate) struct Paging {
    pub(crate) fields: Vec<String>,
    pub(crate) batch: usize,
    pub(crate) after: i64,
}

/// Reads `fields`, `batchSize` and `nextPageToken` (a token of [`page_token`] with the same
/// `prefix`; 1003 for any other).
pub(crate) fn paging(ctx: &Ctx<'_>, cat: &[FieldDef], prefix: &str) -> Result<Paging, Reply> {
    let fields = requested_fields(cat, ctx.param("fields"))?;
    let batch = ctx.batch_size()?;
    let after = match ctx.param("nextPageToken") {
        None => 0,
        Some(t) => decode_token(t)
            .and_then(|s| s.strip_prefix(prefix).and_then(|n| n.parse::<i64>().ok()))
            .ok_or_else(|| Reply::err("1003", "Invalid nextPageToken"))?,
    };
    Ok(Paging { fields, batch, after })
}

/// The `nextPageToken` of a page that ends at lead id `last`, read back by [`paging`].
pub(crate) fn page_token(prefix: &str, last: i64) -> String {
    encode_token(&format!("{prefix}{last}"))
}

/// Whether the lead's `field` equals one of `values` (lower-cased), ignoring case.
fn matches(lead: &Lead, field: &str, values: &std::collections::HashSet<String>) -> bool {
    lead.get(field).and_then(value_string).is_some_and(|v| values.contains(&v.to_lowercase()))
}

pub(crate) fn get_by_filter(ctx: &Ctx<'_>) -> Reply {
    let Some(filter_type) = ctx.param("filterType") else {
        return Reply::err("1003", "filterType cannot be blank");
    };
    let db = ctx.shared.db();
    if !fields::is_filter_type(&db.fields, filter_type) {
        return Reply::err("1011", format!("Field '{filter_type}' not supported"));
    }
    let Some(raw_values) = ctx.param("filterValues") else {
        return Reply::err("1003", "filterValues cannot be blank");
    };
    let values: Vec<String> = raw_values.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if values.len() > ctx.max_batch() {
        return Reply::err("1003", format!("Too many filterValues, max {}", ctx.max_batch()));
    }
    let Paging { fields, batch, after } = match paging(ctx, &db.fields, "lead,") {
        Ok(p) => p,
        Err(e) => return e,
    };
    let (page, more): (Vec<(i64, &Lead)>, bool) = if filter_type.eq_ignore_ascii_case("id") {
        // By id: look the values up (in id order, as the scan below would find them) instead of
        // scanning every lead; a value matches only when it is the id as Marketo renders it.
        let wanted: std::collections::BTreeSet<i64> =
            values.iter().filter_map(|v| v.parse::<i64>().ok().filter(|id| id.to_string() == *v)).collect();
        let mut hits = wanted.range(after + 1..).filter_map(|id| db.leads.get(id).map(|l| (*id, l)));
        let page: Vec<(i64, &Lead)> = hits.by_ref().take(batch).collect();
        (page, hits.next().is_some())
    } else {
        let wanted: std::collections::HashSet<String> = values.iter().map(|v| v.to_lowercase()).collect();
        let mut hits =
            db.leads.range(after + 1..).filter(|(_, l)| matches(l, filter_type, &wanted)).map(|(id, l)| (*id, l));
        let page: Vec<(i64, &Lead)> = hits.by_ref().take(batch).collect();
        (page, hits.next().is_some())
    };
    let result: Vec<Value> = page.iter().map(|(_, l)| render(l, &fields)).collect();
    let mut reply = Reply::ok(result);
    if more && let Some((last, _)) = page.last() {
        reply = reply.with("moreResult", json!(true)).with("nextPageToken", json!(page_token("lead,", *last)));
    }
    reply
}

pub(crate) fn get_by_id(ctx: &Ctx<'_>, id: &str) -> Reply {
    let Ok(id) = id.parse::<i64>() else {
        return Reply::err("1003", format!("Invalid lead id '{id}'"));
    };
    let db = ctx.shared.db();
    let fields = match requested_fields(&db.fields, ctx.param("fields")) {
        Ok(f) => f,
        Err(e) => return e,
    };
    Reply::ok(db.leads.get(&id).map(|l| render(l, &fields)).into_iter().collect())
}

pub(crate) fn describe(ctx: &Ctx<'_>) -> Reply {
    let db = ctx.shared.db();
    Reply::ok(db.fields.iter().map(fields::describe_v1).collect())
}

pub(crate) fn describe2(ctx: &Ctx<'_>) -> Reply {
    let db = ctx.shared.db();
    Reply::ok(vec![json!({
        "name": "API Lead",
        "searchableFields": fields::searchable(&db.fields),
        "fields": db.fields.iter().map(fields::describe_v2).collect::<Vec<_>>(),
    })])
}

/// A skipped record with its reason (`reasons`, as Sync Leads answers).
pub(crate) fn skipped(code: &str, message: impl Into<String>) -> Value {
    json!({"status": "skipped", "reasons": [{"code": code, "message": message.into()}]})
}

fn find(db: &Db, field: &str, value: &Value) -> Vec<i64> {
    let Some(v) = value_string(value) else {
        return Vec::new();
    };
    db.leads
        .iter()
        .filter(|(_, l)| l.get(field).and_then(value_string).is_some_and(|x| x.eq_ignore_ascii_case(&v)))
        .map(|(id, _)| *id)
        .collect()
}

pub(crate) fn sync(ctx: &Ctx<'_>) -> Reply {
    let (body, input) = match ctx.json_input() {
        Ok(b) => b,
        Err(e) => return e,
    };
    let action = body.get("action").and_then(Value::as_str).unwrap_or("createOrUpdate");
    if !matches!(action, "createOnly" | "updateOnly" | "createOrUpdate" | "createDuplicate") {
        return Reply::err("1003", format!("Invalid action '{action}'"));
    }
    let lookup = body.get("lookupField").and_then(Value::as_str).unwrap_or("email");
    let mut db = ctx.shared.db();
    if db.field(lookup).is_none() {
        return Reply::err("1006", format!("Field '{lookup}' not found"));
    }
    let mut out = Vec::with_capacity(input.len());
    for rec in &input {
        let Some(rec) = rec.as_object() else {
            out.push(skipped("1003", "Invalid lead record"));
            continue;
        };
        out.push(outcome(upsert(&mut db, rec, action, lookup, ctx.now, "Web service API")));
    }
    Reply::ok(out)
}

/// One record's upsert: `(id, "created" | "updated")`, or the skip reason `(code, message)`.
pub(crate) type Upserted = Result<(i64, &'static str), (&'static str, String)>;

/// The per-record result entry for an [`Upserted`].
pub(crate) fn outcome(u: Upserted) -> Value {
    match u {
        Ok((id, status)) => json!({"id": id, "status": status}),
        Err((code, msg)) => skipped(code, msg),
    }
}

/// Creates or updates one lead as Sync Leads does (`action`, `lookupField`), emitting the same
/// New Lead / Change Data Value activities (with `source` as their source), whichever endpoint
/// (sync, push, form fill, bulk import) wrote it.
pub(crate) fn upsert(
    db: &mut Db,
    rec: &Map<String, Value>,
    action: &str,
    lookup: &str,
    now: chrono::DateTime<chrono::Utc>,
    source: &str,
) -> Upserted {
    if let Some(bad) = rec.keys().find(|k| db.field(k).is_none()) {
        return Err(("1006", format!("Field '{bad}' not found")));
    }
    if action != "updateOnly" && (rec.contains_key("id") || lookup == "id") {
        return Err(("1003", format!("Field 'id' is only allowed with updateOnly, not {action}")));
    }
    let mut fields = rec.clone();
    fields.remove("id");
    if action == "createDuplicate" {
        return Ok((db.insert_lead(None, fields, now, now, source), "created"));
    }
    let Some(key) = rec.get(lookup).filter(|v| !v.is_null()) else {
        return Err(("1003", format!("Value for lookup field '{lookup}' not specified")));
    };
    let found = if lookup == "id" {
        key.as_i64().filter(|id| db.leads.contains_key(id)).into_iter().collect()
    } else {
        find(db, lookup, key)
    };
    match (found.as_slice(), action) {
        ([_, _, ..], _) => Err(("1007", "Multiple lead match lookup criteria".into())),
        ([_], "createOnly") => Err(("1005", "Lead already exists".into())),
        ([id], _) => {
            let id = *id;
            db.update_lead(id, fields, now, source);
            Ok((id, "updated"))
        }
        ([], "updateOnly") => Err(("1004", "Lead not found".into())),
        ([], _) => Ok((db.insert_lead(None, fields, now, now, source), "created")),
    }
}

pub(crate) fn delete(ctx: &Ctx<'_>) -> Reply {
    let ids: Vec<Option<i64>> = if ctx.body.is_empty() && ctx.param("id").is_some() {
        ctx.param("id").unwrap_or("").split(',').map(|s| s.trim().parse::<i64>().ok()).collect()
    } else {
        let body = match ctx.json() {
            Ok(b) => b,
            Err(e) => return e,
        };
        let Some(input) = body.get("input").and_then(Value::as_array) else {
            return Reply::err("1003", "input cannot be blank");
        };
        input.iter().map(|r| r.get("id").and_then(Value::as_i64)).collect()
    };
    if ids.len() > ctx.max_batch() {
        return Reply::err("1003", format!("Batch size exceeded, max {}", ctx.max_batch()));
    }
    let mut db = ctx.shared.db();
    let out = ids
        .into_iter()
        .map(|id| match id {
            Some(id) if db.delete_lead(id, ctx.now) => json!({"id": id, "status": "deleted"}),
            Some(id) => {
                let mut v = skipped("1004", "Lead not found");
                if let Some(o) = v.as_object_mut() {
                    o.insert("id".into(), json!(id));
                }
                v
            }
            None => skipped("1003", "Invalid lead id"),
        })
        .collect();
    Reply::ok(out)
}

pub(crate) fn merge(ctx: &Ctx<'_>, winner: &str) -> Reply {
    let Ok(winner) = winner.parse::<i64>() else {
        return Reply::err("1003", format!("Invalid lead id '{winner}'"));
    };
    let raw = ctx.param("leadIds").or_else(|| ctx.param("leadId"));
    let Some(raw) = raw else {
        return Reply::err("1003", "leadId or leadIds is required");
    };
    let losers: Result<Vec<i64>, _> = raw.split(',').map(|s| s.trim().parse::<i64>()).collect();
    let Ok(losers) = losers else {
        return Reply::err("1003", format!("Invalid lead ids '{raw}'"));
    };
    if losers.len() > 25 {
        return Reply::err("1080", "More than 25 losing lead ids");
    }
    let mut db = ctx.shared.db();
    let missing = std::iter::once(&winner).chain(losers.iter()).find(|id| !db.leads.contains_key(id)).copied();
    if let Some(id) = missing {
        return Reply::err("1004", format!("Lead '{id}' not found"));
    }
    if losers.contains(&winner) {
        return Reply::err("1003", "Winning lead cannot also be a losing lead");
    }
    db.merge_leads(winner, &losers, ctx.now);
    Reply::ok_void()
}

/// A lead field as `leads/schema/fields` describes it.
fn schema_field(f: &fields::FieldDef) -> Value {
    let mut v = json!({
        "name": f.name,
        "displayName": f.display,
        "description": f.meta.description,
        "dataType": f.data_type,
        "isHidden": f.meta.hidden,
        "isHtmlEncodingInEmail": f.meta.html_encoding,
        "isSensitive": f.meta.sensitive,
        "isCustom": f.meta.custom,
        "isApiCreated": f.meta.api_created,
    });
    if let (Some(len), Some(o)) = (f.length, v.as_object_mut()) {
        o.insert("length".into(), json!(len));
    }
    v
}

/// `GET /rest/v1/leads/schema/fields.json`: the lead fields, `batchSize` at a time, resumed by
/// `nextPageToken`.
pub(crate) fn schema_fields(ctx: &Ctx<'_>) -> Reply {
    let batch = match ctx.batch_size() {
        Ok(b) => b,
        Err(e) => return e,
    };
    let start = match ctx.param("nextPageToken") {
        None => 0,
        Some(t) => match t.strip_prefix("fields:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => return Reply::err("1003", format!("Invalid nextPageToken '{t}'")),
        },
    };
    let db = ctx.shared.db();
    let page: Vec<Value> = db.fields.iter().skip(start).take(batch).map(schema_field).collect();
    let next = start + page.len();
    let more = next < db.fields.len();
    let reply = Reply::ok(page).with("moreResult", json!(more));
    if more { reply.with("nextPageToken", json!(format!("fields:{next}"))) } else { reply }
}

/// `GET /rest/v1/leads/schema/fields/{fieldApiName}.json`.
pub(crate) fn schema_field_by_name(ctx: &Ctx<'_>, name: &str) -> Reply {
    let db = ctx.shared.db();
    match db.fields.iter().find(|f| f.name.eq_ignore_ascii_case(name)) {
        Some(f) => Reply::ok(vec![schema_field(f)]),
        None => Reply::err("1006", format!("Field '{name}' not found")),
    }
}

/// The lead of a `leads/{leadId}/…` path, or the error Marketo gives.
fn existing_lead(ctx: &Ctx<'_>, id: &str) -> Result<i64, Reply> {
    let Ok(id) = id.parse::<i64>() else { return Err(Reply::err("1003", format!("Invalid lead id '{id}'"))) };
    if ctx.shared.db().leads.contains_key(&id) { Ok(id) } else { Err(Reply::err("1004", "Lead not found")) }
}

/// `GET /rest/v1/leads/{leadId}/listMembership.json`, `programMembership.json`,
/// `smartCampaignMembership.json`: the emulator keeps no lists or campaigns, so every lead is a
/// member of none; its program memberships come from the program model (`batchSize` validated).
pub(crate) fn memberships(ctx: &Ctx<'_>, id: &str, kind: &str) -> Reply {
    if let Err(e) = ctx.batch_size() {
        return e;
    }
    match existing_lead(ctx, id) {
        Ok(id) if kind == "programMembership.json" => {
            let db = ctx.shared.db();
            Reply::ok(db.programs.iter().filter_map(|p| p.membership_of(id)).collect())
        }
        Ok(_) => Reply::ok(Vec::new()),
        Err(e) => e,
    }
}

/// `POST /rest/v1/leads/{leadId}/associate.json?cookie=…`: ties a Munchkin cookie to the lead
/// (the emulator has no web activity to merge, so nothing else changes).
pub(crate) fn associate(ctx: &Ctx<'_>, id: &str) -> Reply {
    if ctx.param("cookie").is_none() {
        return Reply::err("1003", "cookie cannot be blank");
    }
    match existing_lead(ctx, id) {
        Ok(_) => Reply::ok(Vec::new()),
        Err(e) => e,
    }
}

/// Data types `leads/schema/fields.json` creates (the Swagger's `CreateLeadField.dataType`).
const CREATABLE_TYPES: &[&str] = &[
    "boolean", "currency", "date", "datetime", "email", "float", "integer", "percent", "phone", "score", "string",
    "url",
];

/// Whether `name` is a valid field API name: starts with a letter, then letters, digits or `_`.
fn valid_field_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic()) && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// The `input` array of a schema-field request's JSON body (612/609 for a body that is not JSON,
/// 1003 when the array is absent or empty).
fn schema_input(ctx: &Ctx<'_>) -> Result<Vec<Value>, Reply> {
    match ctx.json()?.get_mut("input").map(Value::take) {
        Some(Value::Array(a)) if !a.is_empty() => Ok(a),
        _ => Err(Reply::err("1003", "input cannot be blank")),
    }
}

fn bool_of(rec: &Value, key: &str) -> Option<bool> {
    rec.get(key).and_then(Value::as_bool)
}

/// `POST /rest/v1/leads/schema/fields.json`: creates custom lead fields (per record `created` or
/// `skipped`); they then show in describe, describe2 and schema/fields and are readable and
/// writable like standard fields (string, email and integer ones are also searchable).
pub(crate) fn create_fields(ctx: &Ctx<'_>) -> Reply {
    let input = match schema_input(ctx) {
        Ok(i) => i,
        Err(e) => return e,
    };
    if input.len() > ctx.max_batch() {
        return Reply::err("1003", format!("Batch size exceeded, max {}", ctx.max_batch()));
    }
    let mut db = ctx.shared.db();
    let mut out = Vec::with_capacity(input.len());
    for rec in &input {
        let text = |k: &str| rec.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
        let (Some(name), Some(display), Some(data_type)) = (text("name"), text("displayName"), text("dataType")) else {
            out.push(skipped("1003", "name, displayName and dataType are required"));
            continue;
        };
        let named = |v: Value| {
            let mut v = v;
            if let Some(o) = v.as_object_mut() {
                o.insert("name".into(), json!(name));
            }
            v
        };
        if !valid_field_name(name) {
            out.push(named(skipped("1003", format!("Invalid field name '{name}'"))));
            continue;
        }
        if !CREATABLE_TYPES.contains(&data_type) {
            out.push(named(skipped("1003", format!("Invalid dataType '{data_type}'"))));
            continue;
        }
        if db.fields.iter().any(|f| f.name.eq_ignore_ascii_case(name)) {
            out.push(named(skipped("1003", format!("Field '{name}' already exists"))));
            continue;
        }
        if db.fields.iter().any(|f| f.display.eq_ignore_ascii_case(display)) {
            out.push(named(skipped("1003", format!("Display name '{display}' already exists"))));
            continue;
        }
        let id = db.fields.iter().map(|f| f.id).max().unwrap_or(0).max(999) + 1;
        db.fields.push(FieldDef {
            id,
            name: name.to_string(),
            display: display.to_string(),
            data_type: data_type.to_string(),
            length: (data_type == "string").then_some(255),
            updateable: true,
            crm_managed: false,
            searchable: matches!(data_type, "string" | "email" | "integer"),
            meta: fields::FieldMeta {
                description: text("description").unwrap_or("").to_string(),
                hidden: bool_of(rec, "isHidden").unwrap_or(false),
                html_encoding: bool_of(rec, "isHtmlEncodingInEmail").unwrap_or(true),
                sensitive: bool_of(rec, "isSensitive").unwrap_or(false),
                custom: true,
                api_created: true,
            },
        });
        out.push(json!({"name": name, "status": "created"}));
    }
    Reply::ok(out)
}

/// `POST /rest/v1/leads/schema/fields/{fieldApiName}.json`: updates one field's display name,
/// description and flags (`input` holds exactly one item).
pub(crate) fn update_field(ctx: &Ctx<'_>, name: &str) -> Reply {
    let input = match schema_input(ctx) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let [rec] = input.as_slice() else {
        return Reply::err("1003", "input must hold exactly one field");
    };
    let mut db = ctx.shared.db();
    let Some(pos) = db.fields.iter().position(|f| f.name.eq_ignore_ascii_case(name)) else {
        return Reply::err("1006", format!("Field '{name}' not found"));
    };
    let display = rec.get("displayName").and_then(Value::as_str).map(str::trim);
    if display.is_some_and(str::is_empty) {
        return Reply::err("1003", "displayName cannot be blank");
    }
    if let Some(d) = display
        && db.fields.iter().enumerate().any(|(i, f)| i != pos && f.display.eq_ignore_ascii_case(d))
    {
        return Reply::err("1003", format!("Display name '{d}' already exists"));
    }
    let f = &mut db.fields[pos];
    if let Some(d) = display {
        f.display = d.to_string();
    }
    if let Some(d) = rec.get("description").and_then(Value::as_str) {
        f.meta.description = d.to_string();
    }
    if let Some(b) = bool_of(rec, "isHidden") {
        f.meta.hidden = b;
    }
    if let Some(b) = bool_of(rec, "isHtmlEncodingInEmail") {
        f.meta.html_encoding = b;
    }
    if let Some(b) = bool_of(rec, "isSensitive") {
        f.meta.sensitive = b;
    }
    Reply::ok(vec![json!({"name": f.name, "status": "updated"})])
}
