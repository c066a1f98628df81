//! The records the lead database keeps besides leads, activities and bulk jobs: custom activity
//! types (approved and draft versions), and the program model (programs with their channel
//! statuses and members, forms, lead partitions) with its seed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::envelope::fmt_ts;

/// An attribute definition.
#[derive(Debug, Clone)]
pub(crate) struct AttrDef {
    pub(crate) api_name: String,
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) data_type: String,
}

/// One version (approved or draft) of a type.
#[derive(Debug, Clone)]
pub(crate) struct TypeDef {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) trigger_name: String,
    pub(crate) filter_name: String,
    pub(crate) primary: AttrDef,
    pub(crate) attributes: Vec<AttrDef>,
}

/// A custom activity type.
#[derive(Debug, Clone)]
pub(crate) struct CustomType {
    pub(crate) id: i64,
    pub(crate) api_name: String,
    pub(crate) approved: Option<TypeDef>,
    pub(crate) draft: Option<TypeDef>,
    pub(crate) deleted: bool,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

impl CustomType {
    /// The type's status (`approved`, `approved with draft`, `draft` or `deleted`).
    pub(crate) fn status(&self) -> &'static str {
        match (self.deleted, &self.approved, &self.draft) {
            (true, _, _) => "deleted",
            (false, Some(_), None) => "approved",
            (false, Some(_), Some(_)) => "approved with draft",
            (false, None, _) => "draft",
        }
    }

    /// The type as the type endpoints report it (the draft first when `prefer_draft`).
    pub(crate) fn render(&self, prefer_draft: bool) -> Value {
        let def = if prefer_draft {
            self.draft.as_ref().or(self.approved.as_ref())
        } else {
            self.approved.as_ref().or(self.draft.as_ref())
        };
        let mut v = json!({
            "id": self.id,
            "apiName": self.api_name,
            "status": self.status(),
            "createdAt": fmt_ts(self.created_at),
            "updatedAt": fmt_ts(self.updated_at),
        });
        if let (Some(d), Some(o)) = (def, v.as_object_mut()) {
            o.insert("name".into(), json!(d.name));
            if let Some(desc) = &d.description {
                o.insert("description".into(), json!(desc));
            }
            o.insert("triggerName".into(), json!(d.trigger_name));
            o.insert("filterName".into(), json!(d.filter_name));
            o.insert("primaryAttribute".into(), attr_def_json(&d.primary));
            o.insert("attributes".into(), Value::Array(d.attributes.iter().map(attr_def_json).collect()));
        }
        v
    }

    /// The draft version, started from the approved one when there is none.
    pub(crate) fn draft_mut(&mut self) -> Option<&mut TypeDef> {
        if self.draft.is_none() {
            self.draft = self.approved.clone();
        }
        self.draft.as_mut()
    }
}

fn attr_def_json(a: &AttrDef) -> Value {
    let mut v = json!({"apiName": a.api_name, "name": a.name, "dataType": a.data_type});
    if let (Some(d), Some(o)) = (&a.description, v.as_object_mut()) {
        o.insert("description".into(), json!(d));
    }
    v
}

/// The approved version as a `types.json` entry.
pub(crate) fn as_activity_type(t: &CustomType) -> Option<Value> {
    if t.deleted {
        return None;
    }
    let d = t.approved.as_ref()?;
    let mut v = json!({
        "id": t.id,
        "apiName": t.api_name,
        "name": d.name,
        "primaryAttribute": {"apiName": d.primary.api_name, "name": d.primary.name, "dataType": d.primary.data_type},
        "attributes": d.attributes.iter().map(|a| json!({"apiName": a.api_name, "name": a.name, "dataType": a.data_type})).collect::<Vec<_>>(),
    });
    if let (Some(desc), Some(o)) = (&d.description, v.as_object_mut()) {
        o.insert("description".into(), json!(desc));
    }
    Some(v)
}

/// One status of a program's channel.
#[derive(Debug, Clone)]
pub(crate) struct ProgramStatus {
    pub(crate) id: i64,
    pub(crate) name: &'static str,
    pub(crate) step: u32,
    pub(crate) success: bool,
}

/// A lead's membership in a program.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) status: usize,
    pub(crate) acquired_by: bool,
    pub(crate) reached_success: bool,
    pub(crate) membership_date: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

/// A program: its channel's statuses (in step order) and its members by lead id.
#[derive(Debug, Clone)]
pub(crate) struct Program {
    pub(crate) id: i64,
    pub(crate) name: &'static str,
    pub(crate) statuses: Vec<ProgramStatus>,
    pub(crate) members: BTreeMap<i64, Member>,
}

impl Program {
    /// The lead's membership as `leads/{id}/programMembership.json` reports it.
    pub(crate) fn membership_of(&self, lead: i64) -> Option<Value> {
        let m = self.members.get(&lead)?;
        Some(json!({
            "id": self.id,
            "progressionStatus": self.statuses[m.status].name,
            "isExhausted": false,
            "acquiredBy": m.acquired_by,
            "reachedSuccess": m.reached_success,
            "membershipDate": fmt_ts(m.membership_date),
            "updatedAt": fmt_ts(m.updated_at),
        }))
    }

    /// The index of the status named `name` (any case).
    pub(crate) fn status_index(&self, name: &str) -> Option<usize> {
        self.statuses.iter().position(|s| s.name.eq_ignore_ascii_case(name))
    }
}

/// A form `submitForm.json` accepts, optionally tied to a program.
#[derive(Debug, Clone)]
pub(crate) struct Form {
    pub(crate) id: i64,
    pub(crate) name: &'static str,
    pub(crate) program_id: Option<i64>,
}

/// A lead partition.
#[derive(Debug, Clone)]
pub(crate) struct Partition {
    pub(crate) id: i64,
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
}

fn statuses(list: &[(i64, &'static str, u32, bool)]) -> Vec<ProgramStatus> {
    list.iter().map(|&(id, name, step, success)| ProgramStatus { id, name, step, success }).collect()
}

/// The seeded programs: a webinar, an email send and a content program, with their channels'
/// usual statuses.
pub(crate) fn seed_programs() -> Vec<Program> {
    vec![
        Program {
            id: 1001,
            name: "Salesync Webinar 2026",
            statuses: statuses(&[
                (101, "Invited", 10, false),
                (102, "Registered", 20, false),
                (103, "No Show", 30, false),
                (104, "Attended", 40, true),
                (105, "Attended On-demand", 50, true),
            ]),
            members: BTreeMap::new(),
        },
        Program {
            id: 1002,
            name: "Salesync Newsletter",
            statuses: statuses(&[(201, "Member", 10, false), (202, "Engaged", 20, true)]),
            members: BTreeMap::new(),
        },
        Program {
            id: 1003,
            name: "Salesync Whitepaper",
            statuses: statuses(&[(301, "Member", 10, false), (302, "Engaged", 20, true)]),
            members: BTreeMap::new(),
        },
    ]
}

/// The seeded forms (1001 registers for the webinar program).
pub(crate) fn seed_forms() -> Vec<Form> {
    vec![
        Form { id: 1001, name: "Salesync Webinar Registration", program_id: Some(1001) },
        Form { id: 1002, name: "Salesync Contact Us", program_id: None },
    ]
}

/// The seeded partitions (leads without `leadPartitionId` are in the default one).
pub(crate) fn seed_partitions() -> Vec<Partition> {
    vec![
        Partition { id: 1, name: "Default", description: "Initial system lead partition" },
        Partition { id: 2, name: "EMEA", description: "Leads managed by the EMEA team" },
    ]
}
