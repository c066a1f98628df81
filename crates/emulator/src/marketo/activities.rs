//! Incremental endpoints: paging token, activities, lead changes, deleted leads, activity types.

use std::ops::Bound;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

use super::context::Ctx;
use super::envelope::{Reply, answer, fmt_ts, parse_ts, value_string};
use super::fields::requested_fields;
use super::records::as_activity_type;
use super::state::{Activity, CHANGE_DATA_VALUE, DELETE_LEAD, Db, NEW_LEAD, activity_json, attr_json};

/// Standard activity types: (id, name, primary attribute, secondary attributes).
const STANDARD_TYPES: &[(i64, &str, Option<&str>, &[&str])] = &[
    (
        1,
        "Visit Webpage",
        Some("Webpage ID"),
        &["Client IP Address", "Query Parameters", "Referrer URL", "User Agent", "Webpage URL"],
    ),
    (
        2,
        "Fill Out Form",
        Some("Webform ID"),
        &["Client IP Address", "Query Parameters", "Referrer URL", "User Agent", "Webpage ID", "Form Fields"],
    ),
    (
        3,
        "Click Link",
        Some("Link ID"),
        &["Client IP Address", "Query Parameters", "Referrer URL", "User Agent", "Webpage ID"],
    ),
    (6, "Send Email", Some("Mailing ID"), &["Campaign Run ID", "Step ID"]),
    (7, "Email Delivered", Some("Mailing ID"), &["Choice Number", "Campaign Run ID"]),
    (8, "Email Bounced", Some("Mailing ID"), &["Subcategory", "Category", "Email", "Details"]),
    (
        9,
        "Unsubscribe Email",
        Some("Mailing ID"),
        &[
            "Campaign Run ID",
            "Client IP Address",
            "Query Parameters",
            "Referrer URL",
            "User Agent",
            "Webpage ID",
            "Webform ID",
            "Form Fields",
        ],
    ),
    (
        10,
        "Open Email",
        Some("Mailing ID"),
        &["Campaign Run ID", "Platform", "Device", "User Agent", "Is Mobile Device"],
    ),
    (11, "Click Email", Some("Mailing ID"), &["Campaign Run ID", "Link"]),
    (12, "New Lead", None, &["Created Date", "Source Type"]),
    (
        13,
        "Change Data Value",
        Some("Attribute Name"),
        &["Reason", "New Value", "Old Value", "Source", "Campaign", "Channel"],
    ),
    (19, "Sync Lead to SFDC", None, &["Assign To", "Campaign"]),
    (21, "Convert Lead", None, &["Assign To", "Converted Status", "Send Notification Email", "Campaign"]),
    (22, "Change Score", Some("Score Name"), &["Reason", "Change Value", "New Value", "Old Value"]),
    (23, "Change Owner", None, &["Owner", "Old Owner", "Campaign"]),
    (24, "Add to List", Some("List ID"), &["Campaign"]),
    (25, "Remove from List", Some("List ID"), &["Campaign", "Channel"]),
    (
        26,
        "SFDC Activity",
        None,
        &["Is Task", "Subject", "Due Date", "Description", "Priority", "Activity Owner", "Status"],
    ),
    (27, "Email Bounced Soft", Some("Mailing ID"), &["Campaign Run ID", "Subcategory", "Category", "Email", "Details"]),
    (29, "Delete Lead from SFDC", None, &["Delete in Marketo"]),
    (
        30,
        "SFDC Activity Updated",
        None,
        &["Is Task", "Subject", "Due Date", "Description", "Priority", "Activity Owner", "Status"],
    ),
    (31, "SFDC Merge Leads", None, &["Merged", "Winning Values"]),
    (32, "Merge Leads", None, &["Merge IDs", "Merge Fields", "Merge Source"]),
    (34, "Add to Opportunity", Some("Oppty ID"), &["Is Primary", "Role"]),
    (37, "Delete Lead", None, &[]),
    (38, "Send Alert", Some("Mailing ID"), &["Send To Owner", "Send To List"]),
    (39, "Send Sales Email", Some("Artifact ID"), &["Sent by"]),
    (40, "Open Sales Email", Some("Artifact ID"), &["Sent by", "Template ID"]),
    (41, "Click Sales Email", Some("Artifact ID"), &["Sent by", "Template ID", "Link"]),
    (42, "Add to SFDC Campaign", Some("Campaign ID"), &["Status"]),
    (43, "Remove from SFDC Campaign", Some("Campaign ID"), &[]),
    (44, "Change Status in SFDC Campaign", Some("Campaign ID"), &["Old Status", "New Status"]),
    (45, "Receive Sales Email", Some("Artifact ID"), &["Received by"]),
    (46, "Interesting Moment", None, &["Source", "Date", "Type"]),
    (47, "Request Campaign", Some("Campaign ID"), &["Source"]),
    (48, "Sales Email Bounced", None, &[]),
    (100, "Change Lead Partition", None, &["New Partition ID", "Old Partition ID", "Reason"]),
    (101, "Change Revenue Stage", Some("Model ID"), &["Reason", "Old Stage ID", "New Stage ID"]),
    (
        104,
        "Change Status in Progression",
        Some("Program ID"),
        &["Acquired By", "Old Status", "New Status", "New Status ID", "Success", "Old Status ID"],
    ),
    (110, "Call Webhook", None, &["Error Type"]),
    (145, "Push Lead to Marketo", None, &["Reason", "Source"]),
];

/// Encodes a cursor position as the opaque token.
pub(crate) fn encode_token(ms: i64, last_id: i64) -> String {
    let ts = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
    let s = format!("{},{}", ts.format("%Y-%m-%dT%H:%M:%S%.3f+0000"), last_id);
    data_encoding::BASE32.encode(s.as_bytes())
}

/// Decodes a token into (activity date in ms, last activity id).
pub(crate) fn decode_token(token: &str) -> Option<(i64, i64)> {
    let raw = data_encoding::BASE32.decode(token.trim().as_bytes()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (ts, id) = s.rsplit_once(',')?;
    Some((parse_ts(ts)?.timestamp_millis(), id.parse().ok()?))
}

fn lead_change_json(a: &Activity) -> Value {
    let fields: Vec<Value> = a
        .change
        .iter()
        .map(|c| {
            let mut f = json!({"id": c.id, "name": c.name, "newValue": value_string(&c.new)});
            if let (Some(old), Some(o)) = (value_string(&c.old), f.as_object_mut()) {
                o.insert("oldValue".into(), json!(old));
            }
            f
        })
        .collect();
    json!({
        "id": a.id,
        "marketoGUID": a.id.to_string(),
        "leadId": a.lead_id,
        "activityDate": fmt_ts(a.date),
        "activityTypeId": a.type_id,
        "fields": fields,
        "attributes": a.attributes.iter().map(attr_json).collect::<Vec<_>>(),
    })
}

struct Page {
    items: Vec<Value>,
    next: (i64, i64),
    more: bool,
}

fn scan(db: &Db, start: (i64, i64), batch: usize, block: usize, keep: impl Fn(&Activity) -> Option<Value>) -> Page {
    let mut items = Vec::new();
    let mut next = start;
    let mut more = false;
    for (scanned, (k, a)) in db.activities.range((Bound::Excluded(start), Bound::Unbounded)).enumerate() {
        if items.len() >= batch || (block > 0 && scanned >= block) {
            more = true;
            break;
        }
        next = *k;
        if let Some(v) = keep(a) {
            items.push(v);
        }
    }
    Page { items, next, more }
}

fn page_reply(p: Page) -> Reply {
    let mut r = Reply::ok_void()
        .with("nextPageToken", json!(encode_token(p.next.0, p.next.1)))
        .with("moreResult", json!(p.more));
    if !p.items.is_empty() {
        r = r.with("result", Value::Array(p.items));
    }
    r
}

fn token_param(ctx: &Ctx<'_>) -> Result<(i64, i64), Reply> {
    let Some(t) = ctx.param("nextPageToken") else {
        return Err(Reply::err("1003", "nextPageToken cannot be blank"));
    };
    decode_token(t).ok_or_else(|| Reply::err("1003", "Invalid nextPageToken"))
}

fn id_list(ctx: &Ctx<'_>, name: &str, max: usize) -> Result<Option<Vec<i64>>, Reply> {
    let Some(raw) = ctx.param(name) else {
        return Ok(None);
    };
    let ids: Result<Vec<i64>, _> =
        raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::parse::<i64>).collect();
    match ids {
        Ok(ids) if ids.len() > max => Err(Reply::err("1003", format!("Too many values for '{name}', max {max}"))),
        Ok(ids) => Ok(Some(ids)),
        Err(_) => Err(Reply::err("1003", format!("Invalid value for '{name}'"))),
    }
}

pub(crate) fn paging_token(ctx: &Ctx<'_>) -> Reply {
    let Some(since) = ctx.param("sinceDatetime") else {
        return Reply::err("1003", "sinceDatetime cannot be blank");
    };
    let Some(t) = parse_ts(since) else {
        return Reply::err("704", "Invalid date format");
    };
    Reply::ok_void().with("nextPageToken", json!(encode_token(t.timestamp_millis(), 0)))
}

pub(crate) fn get_activities(ctx: &Ctx<'_>) -> Reply {
    answer(|| {
        let start = token_param(ctx)?;
        let types = match id_list(ctx, "activityTypeIds", 10)? {
            Some(t) if !t.is_empty() => t,
            _ => return Err(Reply::err("1003", "activityTypeIds cannot be blank")),
        };
        let leads = id_list(ctx, "leadIds", 30)?;
        let batch = ctx.batch_size()?;
        let db = ctx.shared.db();
        let page = scan(&db, start, batch, ctx.shared.config.scan_block, |a| {
            let ok = types.contains(&a.type_id) && leads.as_ref().is_none_or(|l| l.contains(&a.lead_id));
            ok.then(|| activity_json(a))
        });
        Ok(page_reply(page))
    })
}

pub(crate) fn lead_changes(ctx: &Ctx<'_>) -> Reply {
    answer(|| {
        let start = token_param(ctx)?;
        let raw_fields = ctx.param("fields").ok_or_else(|| Reply::err("1003", "fields cannot be blank"))?;
        let leads = id_list(ctx, "leadIds", 30)?;
        let batch = ctx.batch_size()?;
        let db = ctx.shared.db();
        let fields = requested_fields(&db.fields, Some(raw_fields))?;
        let page = scan(&db, start, batch, ctx.shared.config.scan_block, |a| {
            if leads.as_ref().is_some_and(|l| !l.contains(&a.lead_id)) {
                return None;
            }
            let ok = a.type_id == NEW_LEAD
                || (a.type_id == CHANGE_DATA_VALUE && a.change.as_ref().is_some_and(|c| fields.contains(&c.name)));
            ok.then(|| lead_change_json(a))
        });
        Ok(page_reply(page))
    })
}

pub(crate) fn deleted_leads(ctx: &Ctx<'_>) -> Reply {
    answer(|| {
        let start = token_param(ctx)?;
        let batch = ctx.batch_size()?;
        let cutoff: DateTime<Utc> = ctx.now - ctx.shared.config.deleted_lead_retention;
        let db = ctx.shared.db();
        let page = scan(&db, start, batch, ctx.shared.config.scan_block, |a| {
            (a.type_id == DELETE_LEAD && a.date >= cutoff).then(|| activity_json(a))
        });
        Ok(page_reply(page))
    })
}

pub(crate) fn types(ctx: &Ctx<'_>) -> Reply {
    let mut out: Vec<Value> = STANDARD_TYPES
        .iter()
        .map(|(id, name, primary, attrs)| {
            let mut v = json!({
                "id": id,
                "name": name,
                "description": format!("User {}", name.to_lowercase()),
                "attributes": attrs.iter().map(|a| json!({"name": a, "dataType": "string"})).collect::<Vec<_>>(),
            });
            if let (Some(p), Some(o)) = (primary, v.as_object_mut()) {
                o.insert("primaryAttribute".into(), json!({"name": p, "dataType": "integer"}));
            }
            v
        })
        .collect();
    let db = ctx.shared.db();
    out.extend(db.custom_types.iter().filter_map(as_activity_type));
    Reply::ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_roundtrip_matches_the_documented_shape() {
        let ms = Utc.with_ymd_and_hms(2008, 11, 6, 0, 0, 0).single().map(|t| t.timestamp_millis()).unwrap_or_default();
        let t = encode_token(ms, 0);
        assert_eq!(t, "GIYDAOBNGEYS2MBWKQYDAORQGA5DAMBOGAYDAKZQGAYDALBQ");
        assert_eq!(decode_token(&t), Some((ms, 0)));
        assert_eq!(decode_token("garbage!"), None);
    }
}
