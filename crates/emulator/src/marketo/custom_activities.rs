//! Custom activity types (metadata with a draft/approve lifecycle) and Add Custom Activities.

use serde_json::{Value, json};

use super::context::Ctx;
use super::envelope::{Reply, fmt_ts, parse_ts};
use super::records::{AttrDef, CustomType, TypeDef};
use super::state::{Activity, Attr};

/// Max secondary attributes per type (1028 beyond).
const MAX_ATTRIBUTES: usize = 20;
/// Max serialized size of one record's `attributes` (1049 beyond).
const MAX_ATTRIBUTES_BYTES: usize = 65_536;

fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

const DATA_TYPES: &[&str] =
    &["string", "boolean", "integer", "float", "link", "email", "currency", "date", "datetime", "phone", "text"];

fn parse_attr(v: &Value) -> Result<AttrDef, Reply> {
    let (Some(api), Some(name)) = (str_field(v, "apiName"), str_field(v, "name")) else {
        return Err(Reply::err("1003", "Attribute apiName and name are required"));
    };
    let data_type = str_field(v, "dataType").unwrap_or("string");
    if !DATA_TYPES.contains(&data_type) {
        return Err(Reply::err("1003", format!("Invalid dataType '{data_type}'")));
    }
    Ok(AttrDef {
        api_name: api.to_string(),
        name: name.to_string(),
        description: str_field(v, "description").map(str::to_string),
        data_type: data_type.to_string(),
    })
}

fn valid_api_name(s: &str) -> bool {
    s.len() <= 255 && s.chars().all(|c| c.is_ascii_alphanumeric()) && s.chars().any(|c| c.is_ascii_alphabetic())
}

fn not_found(api: &str) -> Reply {
    Reply::err("1013", format!("Activity type '{api}' not found"))
}

pub(crate) fn list(ctx: &Ctx<'_>) -> Reply {
    let db = ctx.shared.db();
    Reply::ok(db.custom_types.iter().filter(|t| !t.deleted).map(|t| t.render(false)).collect())
}

pub(crate) fn describe(ctx: &Ctx<'_>, api: &str) -> Reply {
    let draft = ctx.param("draft").is_some_and(|d| d.eq_ignore_ascii_case("true"));
    let db = ctx.shared.db();
    match db.custom_types.iter().find(|t| !t.deleted && t.api_name == api) {
        Some(t) => Reply::ok(vec![t.render(draft)]),
        None => not_found(api),
    }
}

pub(crate) fn create(ctx: &Ctx<'_>) -> Reply {
    let body = match ctx.json() {
        Ok(b) => b,
        Err(e) => return e,
    };
    let (Some(api), Some(name), Some(trigger), Some(filter)) = (
        str_field(&body, "apiName"),
        str_field(&body, "name"),
        str_field(&body, "triggerName"),
        str_field(&body, "filterName"),
    ) else {
        return Reply::err("1003", "apiName, name, triggerName and filterName are required");
    };
    if !valid_api_name(api) {
        return Reply::err("1003", format!("Invalid apiName '{api}'"));
    }
    let Some(primary) = body.get("primaryAttribute") else {
        return Reply::err("1003", "primaryAttribute is required");
    };
    let primary = match parse_attr(primary) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut db = ctx.shared.db();
    if db.custom_types.iter().any(|t| !t.deleted && t.api_name == api) {
        return Reply::err("1003", format!("Activity type with apiName '{api}' already exists"));
    }
    if db.custom_types.iter().filter(|t| !t.deleted).count() >= ctx.shared.config.max_custom_activity_types {
        return Reply::err("1027", "Max custom activity types reached");
    }
    let id = db.next_custom_type_id;
    db.next_custom_type_id += 1;
    let t = CustomType {
        id,
        api_name: api.to_string(),
        approved: None,
        draft: Some(TypeDef {
            name: name.to_string(),
            description: str_field(&body, "description").map(str::to_string),
            trigger_name: trigger.to_string(),
            filter_name: filter.to_string(),
            primary,
            attributes: Vec::new(),
        }),
        deleted: false,
        created_at: ctx.now,
        updated_at: ctx.now,
    };
    let out = t.render(true);
    db.custom_types.push(t);
    Reply::ok(vec![out])
}

pub(crate) fn update(ctx: &Ctx<'_>, api: &str) -> Reply {
    let body = match ctx.json() {
        Ok(b) => b,
        Err(e) => return e,
    };
    let primary = match body.get("primaryAttribute").map(parse_attr).transpose() {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut db = ctx.shared.db();
    let Some(t) = db.custom_types.iter_mut().find(|t| !t.deleted && t.api_name == api) else {
        return not_found(api);
    };
    t.updated_at = ctx.now;
    if let Some(d) = t.draft_mut() {
        if let Some(v) = str_field(&body, "name") {
            d.name = v.to_string();
        }
        if let Some(v) = str_field(&body, "description") {
            d.description = Some(v.to_string());
        }
        if let Some(v) = str_field(&body, "triggerName") {
            d.trigger_name = v.to_string();
        }
        if let Some(v) = str_field(&body, "filterName") {
            d.filter_name = v.to_string();
        }
        if let Some(p) = primary {
            d.primary = p;
        }
    }
    Reply::ok(vec![t.render(true)])
}

pub(crate) fn type_op(ctx: &Ctx<'_>, api: &str, op: &str) -> Reply {
    let mut db = ctx.shared.db();
    let Some(t) = db.custom_types.iter_mut().find(|t| !t.deleted && t.api_name == api) else {
        return not_found(api);
    };
    match op {
        "approve.json" => {
            let Some(d) = t.draft.take() else {
                return Reply::err("1003", "No draft to approve");
            };
            t.approved = Some(d);
        }
        "discardDraft.json" => {
            if t.approved.is_none() || t.draft.is_none() {
                return Reply::err("1003", "No draft to discard on an approved type");
            }
            t.draft = None;
        }
        "delete.json" => t.deleted = true,
        _ => return Reply::err("610", "Requested resource not found"),
    }
    t.updated_at = ctx.now;
    Reply::ok(vec![t.render(false)])
}

pub(crate) fn attributes(ctx: &Ctx<'_>, api: &str, op: &str) -> Reply {
    if !matches!(op, "create.json" | "update.json" | "delete.json") {
        return Reply::err("610", "Requested resource not found");
    }
    let body = match ctx.json() {
        Ok(b) => b,
        Err(e) => return e,
    };
    let Some(items) = body.get("attributes").and_then(Value::as_array) else {
        return Reply::err("1003", "attributes cannot be blank");
    };
    let mut db = ctx.shared.db();
    let Some(t) = db.custom_types.iter_mut().find(|t| !t.deleted && t.api_name == api) else {
        return not_found(api);
    };
    let Some(mut draft) = t.draft_mut().cloned() else {
        return not_found(api);
    };
    for item in items {
        match op {
            "delete.json" => {
                let Some(a) = str_field(item, "apiName") else {
                    return Reply::err("1003", "Attribute apiName is required");
                };
                let before = draft.attributes.len();
                draft.attributes.retain(|x| x.api_name != a);
                if draft.attributes.len() == before {
                    return Reply::err("1006", format!("Attribute '{a}' not found"));
                }
            }
            _ => {
                let a = match parse_attr(item) {
                    Ok(a) => a,
                    Err(e) => return e,
                };
                let pos = draft.attributes.iter().position(|x| x.api_name == a.api_name);
                match (op, pos) {
                    ("create.json", Some(_)) => {
                        return Reply::err("1003", format!("Attribute '{}' already exists", a.api_name));
                    }
                    ("create.json", None) => draft.attributes.push(a),
                    (_, Some(i)) => draft.attributes[i] = a,
                    (_, None) => return Reply::err("1006", format!("Attribute '{}' not found", a.api_name)),
                }
            }
        }
    }
    if draft.attributes.len() > MAX_ATTRIBUTES {
        return Reply::err("1028", format!("Max {MAX_ATTRIBUTES} attributes allowed per activity type"));
    }
    t.draft = Some(draft);
    t.updated_at = ctx.now;
    Reply::ok(vec![t.render(true)])
}

fn skip(code: &str, message: impl Into<String>) -> Value {
    json!({"status": "skipped", "errors": [{"code": code, "message": message.into()}]})
}

pub(crate) fn add(ctx: &Ctx<'_>) -> Reply {
    let (_, input) = match ctx.json_input() {
        Ok(b) => b,
        Err(e) => return e,
    };
    let mut db = ctx.shared.db();
    let mut out = Vec::with_capacity(input.len());
    for rec in &input {
        let lead_id = rec.get("leadId").and_then(Value::as_i64);
        let type_id = rec.get("activityTypeId").and_then(Value::as_i64);
        let ty = type_id.and_then(|id| db.custom_types.iter().find(|t| t.id == id && !t.deleted));
        let Some((ty_api, def)) = ty.and_then(|t| t.approved.clone().map(|d| (t.api_name.clone(), d))) else {
            out.push(skip("1003", "Invalid activity type id"));
            continue;
        };
        let Some(lead_id) = lead_id.filter(|id| db.leads.contains_key(id)) else {
            out.push(skip("1004", "Lead not found"));
            continue;
        };
        let Some(date) = rec.get("activityDate").and_then(Value::as_str).and_then(parse_ts) else {
            out.push(skip("1001", "Invalid value for activityDate"));
            continue;
        };
        let primary = match rec.get("primaryAttributeValue") {
            Some(Value::String(s)) => s.clone(),
            Some(v) if !v.is_null() => v.to_string(),
            _ => {
                out.push(skip("1003", "primaryAttributeValue cannot be blank"));
                continue;
            }
        };
        let raw_attrs = rec.get("attributes").cloned().unwrap_or(Value::Array(Vec::new()));
        if serde_json::to_vec(&raw_attrs).map(|b| b.len()).unwrap_or(0) > MAX_ATTRIBUTES_BYTES {
            out.push(skip("1049", "Attribute array exceeds maximum size of 65536 bytes"));
            continue;
        }
        let mut attrs = Vec::new();
        let mut bad = None;
        for a in raw_attrs.as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let key = str_field(a, "apiName").or_else(|| str_field(a, "name")).unwrap_or("");
            match def.attributes.iter().find(|d| d.api_name == key || d.name == key) {
                Some(d) => attrs.push(Attr {
                    name: d.name.clone(),
                    api_name: Some(d.api_name.clone()),
                    value: a.get("value").cloned().unwrap_or(Value::Null),
                }),
                None => {
                    bad = Some(key.to_string());
                    break;
                }
            }
        }
        if let Some(key) = bad {
            out.push(skip("1006", format!("Attribute '{key}' not found")));
            continue;
        }
        let record = Activity {
            id: 0,
            lead_id,
            date,
            type_id: type_id.unwrap_or_default(),
            campaign_id: None,
            primary_value_id: None,
            primary_value: Some(primary.clone()),
            attributes: attrs.clone(),
            change: None,
        };
        let id = db.push_activity(record);
        db.custom_added.push(json!({
            "id": id,
            "marketoGUID": id.to_string(),
            "leadId": lead_id,
            "activityDate": fmt_ts(date),
            "activityTypeId": type_id,
            "apiName": ty_api,
            "primaryAttributeValue": primary,
            "attributes": attrs.iter().map(|a| json!({"apiName": a.api_name, "name": a.name, "value": a.value})).collect::<Vec<_>>(),
        }));
        out.push(json!({"id": id, "marketoGUID": id.to_string(), "status": "added"}));
    }
    Reply::ok(out)
}
