//! A minimal program model (a few seeded programs with their channel's status list and members),
//! forms, lead partitions, and the lead endpoints that use them: leads by program, change program
//! status, push leads, submit form, move leads between partitions, describe program members.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::context::Ctx;
use super::envelope::{Reply, fmt_ts, value_string};
use super::leads::{self, Paging, outcome, paging, render, skipped, upsert};
use super::records::{Member, Partition};
use super::state::{Attr, Db};

/// Fill Out Form.
const FILL_OUT_FORM: i64 = 2;
/// Change Lead Partition.
const CHANGE_LEAD_PARTITION: i64 = 100;
/// Change Status in Progression.
const CHANGE_PROGRAM_STATUS: i64 = 104;
/// Push Lead to Marketo.
const PUSH_LEAD: i64 = 145;

/// How a status change went.
enum Change {
    /// Set (or already that status).
    Done,
    /// A later status than the requested one is already reached: left unchanged.
    Backwards(&'static str),
}

/// Sets a lead's status in a program (joining it if needed); emits Change Status in Progression.
/// Statuses only move forward, as in Marketo.
fn set_status(db: &mut Db, prog: usize, lead: i64, status: usize, now: DateTime<Utc>, acquired: bool) -> Change {
    let p = &mut db.programs[prog];
    let new = p.statuses[status].clone();
    let old = p.members.get(&lead).map(|m| p.statuses[m.status].clone());
    if let Some(o) = &old {
        if o.step > new.step {
            return Change::Backwards(o.name);
        }
        if o.step == new.step {
            return Change::Done;
        }
    }
    let member = p.members.entry(lead).or_insert(Member {
        status,
        acquired_by: acquired,
        reached_success: false,
        membership_date: now,
        updated_at: now,
    });
    member.status = status;
    member.updated_at = now;
    member.reached_success |= new.success;
    let (pid, pname, acquired_by) = (p.id, p.name, member.acquired_by);
    let mut a = Db::activity(lead, now, CHANGE_PROGRAM_STATUS);
    a.primary_value_id = Some(pid);
    a.primary_value = Some(pname.to_string());
    a.attributes = vec![
        Attr::new("Acquired By", json!(acquired_by)),
        Attr::new("Old Status", json!(old.as_ref().map_or("Not in Program", |o| o.name))),
        Attr::new("New Status", json!(new.name)),
        Attr::new("New Status ID", json!(new.id)),
        Attr::new("Success", json!(new.success)),
        Attr::new("Old Status ID", json!(old.as_ref().map_or(0, |o| o.id))),
    ];
    db.push_activity(a);
    Change::Done
}

/// Joins a lead to a program at its first status unless already a member.
fn join(db: &mut Db, prog: usize, lead: i64, now: DateTime<Utc>, acquired: bool) {
    if !db.programs[prog].members.contains_key(&lead) {
        set_status(db, prog, lead, 0, now, acquired);
    }
}

fn program_by_id(db: &Db, id: &str) -> Result<usize, Reply> {
    let Ok(id) = id.trim().parse::<i64>() else {
        return Err(Reply::err("1003", format!("Invalid program id '{id}'")));
    };
    db.programs.iter().position(|p| p.id == id).ok_or_else(|| Reply::err("1013", "Program not found"))
}

/// `GET /rest/v1/leads/programs/{programId}.json` (also `POST …?_method=GET` with a form body):
/// the program's members with the requested fields and their `membership`, paged.
pub(crate) fn leads_by_program(ctx: &Ctx<'_>, program: &str) -> Reply {
    let db = ctx.shared.db();
    let prog = match program_by_id(&db, program) {
        Ok(p) => &db.programs[p],
        Err(e) => return e,
    };
    let prefix = format!("prog,{},", prog.id);
    let Paging { fields, batch, after } = match paging(ctx, &db.fields, &prefix) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut hits = prog.members.range(after + 1..).filter_map(|(id, m)| db.leads.get(id).map(|l| (*id, l, m)));
    let page: Vec<(i64, Value)> = hits
        .by_ref()
        .take(batch)
        .map(|(id, lead, m)| {
            let mut v = render(lead, &fields);
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "membership".into(),
                    json!({
                        "acquiredBy": m.acquired_by,
                        "isExhausted": false,
                        "membershipDate": fmt_ts(m.membership_date),
                        "progressionStatus": prog.statuses[m.status].name,
                        "reachedSuccess": m.reached_success,
                    }),
                );
            }
            (id, v)
        })
        .collect();
    let more = hits.next().is_some();
    let last = page.last().map(|(id, _)| *id);
    let mut reply = Reply::ok(page.into_iter().map(|(_, v)| v).collect());
    if more && let Some(last) = last {
        reply = reply.with("moreResult", json!(true)).with("nextPageToken", json!(leads::page_token(&prefix, last)));
    }
    reply
}

fn str_of<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

/// `POST /rest/v1/leads/programs/{programId}/status.json`: `{status, input:[{id}]}`; per lead
/// `updated`, or `skipped` (1004 unknown lead; 1003 when it is already past that status).
pub(crate) fn change_status(ctx: &Ctx<'_>, program: &str) -> Reply {
    let body = match ctx.json() {
        Ok(b) => b,
        Err(e) => return e,
    };
    let mut db = ctx.shared.db();
    let prog = match program_by_id(&db, program) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let Some(status_name) = str_of(&body, "status") else {
        return Reply::err("1003", "status cannot be blank");
    };
    let input = match ctx.input_of(&body) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let Some(status) = db.programs[prog].status_index(status_name) else {
        return Reply::err("1003", format!("Invalid status '{status_name}' for program {}", db.programs[prog].id));
    };
    let mut out = Vec::with_capacity(input.len());
    for rec in input {
        let Some(id) = rec.get("id").and_then(Value::as_i64) else {
            out.push(skipped("1003", "Lead id is required"));
            continue;
        };
        let with_id = |mut v: Value| {
            if let Some(o) = v.as_object_mut() {
                o.insert("id".into(), json!(id));
            }
            v
        };
        if !db.leads.contains_key(&id) {
            out.push(with_id(skipped("1004", "Lead not found")));
            continue;
        }
        match set_status(&mut db, prog, id, status, ctx.now, false) {
            Change::Done => out.push(json!({"id": id, "status": "updated"})),
            Change::Backwards(cur) => out.push(with_id(skipped(
                "1003",
                format!("Lead is already in a later status '{cur}' than '{status_name}'"),
            ))),
        }
    }
    Reply::ok(out)
}

fn partition_by_name<'a>(db: &'a Db, name: &str) -> Option<&'a Partition> {
    db.partitions.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// `POST /rest/v1/leads/push.json`: upserts leads (by `lookupField`, default `email`) and pushes
/// them into the program `programName` (at `programStatus`, else its first status), emitting the
/// same lead-change activities Sync Leads does plus Push Lead to Marketo.
pub(crate) fn push(ctx: &Ctx<'_>) -> Reply {
    let body = match ctx.json() {
        Ok(b) => b,
        Err(e) => return e,
    };
    let Some(program_name) = str_of(&body, "programName") else {
        return Reply::err("1003", "programName cannot be blank");
    };
    let input = match ctx.input_of(&body) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let lookup = str_of(&body, "lookupField").unwrap_or("email");
    let source = str_of(&body, "source").unwrap_or("Web service API").to_string();
    let reason = str_of(&body, "reason").unwrap_or("Push lead to Marketo").to_string();
    let mut db = ctx.shared.db();
    if db.field(lookup).is_none() {
        return Reply::err("1006", format!("Field '{lookup}' not found"));
    }
    let Some(prog) = db.programs.iter().position(|p| p.name.eq_ignore_ascii_case(program_name)) else {
        return Reply::err("1013", format!("Program '{program_name}' not found"));
    };
    let status = match str_of(&body, "programStatus") {
        None => None,
        Some(s) => match db.programs[prog].status_index(s) {
            Some(i) => Some(i),
            None => return Reply::err("1003", format!("Invalid program status '{s}'")),
        },
    };
    let partition = match str_of(&body, "partitionName") {
        None => None,
        Some(n) => match partition_by_name(&db, n) {
            Some(p) => Some(p.id),
            None => return Reply::err("1009", format!("Partition '{n}' does not exist")),
        },
    };
    let (pid, pname) = (db.programs[prog].id, db.programs[prog].name);
    let mut out = Vec::with_capacity(input.len());
    for rec in input {
        let Some(rec) = rec.as_object() else {
            out.push(skipped("1003", "Invalid lead record"));
            continue;
        };
        let mut rec = rec.clone();
        let res = upsert(&mut db, &rec_without_partition(&mut rec), "createOrUpdate", lookup, ctx.now, &source);
        if let Ok((id, st)) = &res {
            let created = *st == "created";
            if created && let (Some(part), Some(lead)) = (partition, db.leads.get_mut(id)) {
                lead.insert("leadPartitionId".into(), json!(part));
            }
            let mut a = Db::activity(*id, ctx.now, PUSH_LEAD);
            a.primary_value_id = Some(pid);
            a.primary_value = Some(pname.to_string());
            a.attributes = vec![Attr::new("Reason", json!(reason)), Attr::new("Source", json!(source))];
            db.push_activity(a);
            match status {
                Some(s) => {
                    set_status(&mut db, prog, *id, s, ctx.now, created);
                }
                None => join(&mut db, prog, *id, ctx.now, created),
            }
        }
        out.push(outcome(res));
    }
    Reply::ok(out)
}

/// Push records may not set the read-only `leadPartitionId`; it comes from `partitionName`.
fn rec_without_partition(rec: &mut Map<String, Value>) -> Map<String, Value> {
    rec.remove("leadPartitionId");
    rec.clone()
}

/// `POST /rest/v1/leads/submitForm.json`: `{formId, programId?, input:[{leadFormFields, visitorData?,
/// cookie?}]}` (one submission): upserts the lead by email, emits the lead-change activities and
/// Fill Out Form, and joins the form's (or `programId`'s) program.
pub(crate) fn submit_form(ctx: &Ctx<'_>) -> Reply {
    let body = match ctx.json() {
        Ok(b) => b,
        Err(e) => return e,
    };
    let Some(form_id) = body.get("formId") else {
        return Reply::err("1003", "formId cannot be blank");
    };
    let Some(form_id) = form_id.as_i64().or_else(|| form_id.as_str().and_then(|s| s.trim().parse().ok())) else {
        return Reply::err("1003", "Invalid formId");
    };
    let input = match ctx.input_of(&body) {
        Ok(i) => i,
        Err(e) => return e,
    };
    if input.len() != 1 {
        return Reply::err("1003", "input must hold exactly one form submission");
    }
    let mut db = ctx.shared.db();
    let Some(form) = db.forms.iter().find(|f| f.id == form_id).cloned() else {
        return Reply::err("1013", format!("Form '{form_id}' not found"));
    };
    let program = match body.get("programId").filter(|v| !v.is_null()) {
        None => form.program_id.and_then(|id| db.programs.iter().position(|p| p.id == id)),
        Some(v) => match program_by_id(&db, &value_string(v).unwrap_or_default()) {
            Ok(p) => Some(p),
            Err(e) => return e,
        },
    };
    let mut out = Vec::with_capacity(1);
    for sub in input {
        let Some(fields) = sub.get("leadFormFields").and_then(Value::as_object) else {
            out.push(skipped("1003", "leadFormFields cannot be blank"));
            continue;
        };
        if fields.get("email").and_then(Value::as_str).is_none_or(|e| e.trim().is_empty()) {
            out.push(skipped("1003", "email cannot be blank"));
            continue;
        }
        let res = upsert(&mut db, fields, "createOrUpdate", "email", ctx.now, "Web form fillout");
        if let Ok((id, st)) = &res {
            let visitor = sub.get("visitorData");
            let v = |k: &str| visitor.and_then(|x| x.get(k)).and_then(Value::as_str).filter(|s| !s.is_empty());
            let mut a = Db::activity(*id, ctx.now, FILL_OUT_FORM);
            a.primary_value_id = Some(form.id);
            a.primary_value = Some(form.name.to_string());
            for (name, key) in [
                ("Client IP Address", "leadClientIpAddress"),
                ("Query Parameters", "queryString"),
                ("Referrer URL", "pageURL"),
                ("User Agent", "userAgentString"),
            ] {
                if let Some(x) = v(key) {
                    a.attributes.push(Attr::new(name, json!(x)));
                }
            }
            a.attributes.push(Attr::new("Form Fields", json!(Value::Object(fields.clone()).to_string())));
            db.push_activity(a);
            if let Some(p) = program {
                join(&mut db, p, *id, ctx.now, *st == "created");
            }
        }
        out.push(outcome(res));
    }
    Reply::ok(out)
}

/// `POST /rest/v1/leads/partitions.json`: `{input:[{id, partitionName}]}`; per lead `updated`, or
/// `skipped` (1004 unknown lead, 1009 unknown partition); a move emits Change Lead Partition.
pub(crate) fn update_partitions(ctx: &Ctx<'_>) -> Reply {
    let body = match ctx.json() {
        Ok(b) => b,
        Err(e) => return e,
    };
    let input = match ctx.input_of(&body) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let mut db = ctx.shared.db();
    let mut out = Vec::with_capacity(input.len());
    for rec in input {
        let (Some(id), Some(name)) = (rec.get("id").and_then(Value::as_i64), str_of(rec, "partitionName")) else {
            out.push(skipped("1003", "id and partitionName are required"));
            continue;
        };
        let Some(part) = partition_by_name(&db, name).map(|p| p.id) else {
            out.push(json!({"id": id, "status": "skipped",
                            "reasons": [{"code": "1009", "message": format!("Partition '{name}' does not exist")}]}));
            continue;
        };
        let Some(lead) = db.leads.get_mut(&id) else {
            out.push(
                json!({"id": id, "status": "skipped", "reasons": [{"code": "1004", "message": "Lead not found"}]}),
            );
            continue;
        };
        let old = lead.get("leadPartitionId").and_then(Value::as_i64).unwrap_or(1);
        if old != part {
            lead.insert("leadPartitionId".into(), json!(part));
            let mut a = Db::activity(id, ctx.now, CHANGE_LEAD_PARTITION);
            a.attributes = vec![
                Attr::new("New Partition ID", json!(part)),
                Attr::new("Old Partition ID", json!(old)),
                Attr::new("Reason", json!("Web service API")),
            ];
            db.push_activity(a);
        }
        out.push(json!({"id": id, "status": "updated"}));
    }
    Reply::ok(out)
}

/// `GET /rest/v1/leads/partitions.json`.
pub(crate) fn partitions(ctx: &Ctx<'_>) -> Reply {
    let db = ctx.shared.db();
    Reply::ok(db.partitions.iter().map(|p| json!({"id": p.id, "name": p.name, "description": p.description})).collect())
}

/// `GET /rest/v1/program/members/describe.json` (and `programs/members/describe.json`): the
/// standard program member fields.
pub(crate) fn describe_members(_ctx: &Ctx<'_>) -> Reply {
    const FIELDS: &[(&str, &str, &str, bool)] = &[
        ("leadId", "Lead Id", "integer", false),
        ("programId", "Program Id", "integer", false),
        ("membershipDate", "Membership Date", "datetime", false),
        ("progressionStatus", "Status", "string", true),
        ("progressionStatusType", "Status Type", "string", false),
        ("reachedSuccess", "Success", "boolean", false),
        ("reachedSuccessDate", "Success Date", "datetime", false),
        ("acquiredBy", "Acquired By", "boolean", false),
        ("isExhausted", "Exhausted", "boolean", false),
        ("nurtureCadence", "Cadence", "string", false),
        ("stream", "Stream", "string", false),
        ("registrationCode", "Registration Code", "string", true),
        ("webinarUrl", "Webinar Url", "string", true),
        ("statusReason", "Status Reason", "string", true),
        ("createdAt", "Created At", "datetime", false),
        ("updatedAt", "Updated At", "datetime", false),
    ];
    let fields: Vec<Value> = FIELDS
        .iter()
        .map(|&(name, display, dt, updateable)| {
            let mut v = json!({"name": name, "displayName": display, "dataType": dt, "updateable": updateable,
                               "crmManaged": false});
            if dt == "string"
                && let Some(o) = v.as_object_mut()
            {
                o.insert("length".into(), json!(255));
            }
            v
        })
        .collect();
    Reply::ok(vec![json!({
        "name": "API Program Member",
        "description": "Map for API program member fields",
        "createdAt": "2024-01-01T00:00:00Z",
        "updatedAt": "2024-01-01T00:00:00Z",
        "dedupeFields": ["leadId", "programId"],
        "searchableFields": [["leadId"], ["programId"], ["progressionStatus"], ["registrationCode"]],
        "fields": fields,
    })])
}
